/* Fast masking for trio_ws (RFC 6455 section 5.3): XOR with a 4-byte key, 8 bytes at a time.
 * Optional: trio_ws/_mask.py falls back to pure Python when this is not built. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    const unsigned char *in = (const unsigned char *)data.buf;
    const unsigned char *key = (const unsigned char *)mask.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t n = data.len, i = 0;

    Py_BEGIN_ALLOW_THREADS
    /* The key repeated over a 64-bit word; memcpy keeps unaligned access well defined. */
    uint64_t wide;
    unsigned char key8[8];
    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    memcpy(&wide, key8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, in + i, 8);
        word ^= wide;
        memcpy(out + i, &word, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ key[i & 3];
    }
    Py_END_ALLOW_THREADS

done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS,
     "apply_mask(data, mask) -> bytes: XOR data with the 4-byte mask repeated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "trio_ws.protocol._speedups", "C speedups for trio_ws.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
