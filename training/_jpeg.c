/* Decoding the stored JPEGs straight into a reused array, with libjpeg(-turbo).
 *
 *   decode(data, out) -> (height, width, done) | None
 *
 * data: the bytes of a JPEG file;
 * out:  a writable C-contiguous uint8 buffer, reused from image to image;
 * returns (height, width, True) with the RGB pixels in the first
 * height * width * 3 bytes of `out`, (height, width, False) with nothing
 * decoded when `out` is too small (the caller grows it and asks again), or
 * None for anything this path does not take: not a 3-component JPEG, a
 * warning or an error from libjpeg (a damaged file). The caller then decodes
 * with Pillow, which gives the same pixels where this path does (the same
 * libjpeg, the same settings: RGB out, fancy upsampling, the accurate integer
 * IDCT) and raises its usual error where the file is damaged.
 *
 * Per 256x256 image this skips Pillow's Python-level header parsing and the
 * copies of `np.asarray(image)` (an RGBX-to-RGB pack into chunks, then a
 * join); the training loader's workers call it (training/data.py).
 * Optional: without it (no compiler, or another Python), Pillow decodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>

struct failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
};

static void on_error(j_common_ptr cinfo) {
    longjmp(((struct failure *)cinfo->err)->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning (a truncated or corrupt file): the image goes to Pillow */
        cinfo->err->num_warnings++;
    }
}

static void quiet(j_common_ptr cinfo) { (void)cinfo; }

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer data, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*", &data, &out)) {
        return NULL;
    }
    struct jpeg_decompress_struct cinfo;
    struct failure err;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_error;
    err.mgr.emit_message = on_message;
    err.mgr.output_message = quiet;
    PyObject *result = NULL;
    volatile int created = 0;
    int ok = 0;
    JDIMENSION height = 0, width = 0;

    Py_BEGIN_ALLOW_THREADS
    if (setjmp(err.jump) == 0) {
        jpeg_create_decompress(&cinfo);
        created = 1;
        jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        int supported = cinfo.num_components == 3 &&
                        (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB);
        if (supported) {
            cinfo.out_color_space = JCS_RGB;
            height = cinfo.image_height;
            width = cinfo.image_width;
            if ((Py_ssize_t)height * width * 3 > out.len) {
                ok = 2; /* too small: the caller grows `out` */
            } else {
                jpeg_start_decompress(&cinfo);
                JSAMPROW row;
                size_t stride = (size_t)cinfo.output_width * 3;
                while (cinfo.output_scanline < cinfo.output_height) {
                    row = (JSAMPROW)((unsigned char *)out.buf + cinfo.output_scanline * stride);
                    jpeg_read_scanlines(&cinfo, &row, 1);
                }
                jpeg_finish_decompress(&cinfo);
                ok = err.mgr.num_warnings == 0 ? 1 : 0;
            }
        }
    } else {
        ok = 0; /* libjpeg's error: Pillow will say what is wrong */
    }
    if (created) {
        jpeg_destroy_decompress(&cinfo);
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (ok == 0) {
        Py_RETURN_NONE;
    }
    result = Py_BuildValue("(IIO)", (unsigned)height, (unsigned)width, ok == 1 ? Py_True : Py_False);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, out) -> (height, width, done) or None: RGB pixels into `out`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpeg(void) { return PyModule_Create(&module); }
