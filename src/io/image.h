/* Decoding JPEG (libjpeg-turbo) and PNG (libpng) files into 8-bit grayscale or RGB pixels, the
 * way PIL's Image.open(...).convert("RGB") sees them: EXIF orientation ignored, alpha dropped
 * (not composited), palettes expanded, 16-bit samples cut to their high byte.
 *
 * All input is untrusted: every failure is a CN_ERR_FORMAT (or IO / NOMEM) naming the file, the
 * dimensions are checked before any pixel buffer is allocated, and neither library is allowed
 * to exit or print. */
#ifndef CN_IO_IMAGE_H
#define CN_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"

#define CN_IMAGE_MAX_SIDE 32768
#define CN_IMAGE_MAX_PIXELS ((int64_t)1 << 28)
#define CN_IMAGE_MAX_FILE ((size_t)1 << 30)

typedef struct cn_image {
    int w, h, c;      /* c: 1 (grayscale) or 3 (RGB) */
    uint8_t *data;    /* (h, w, c), owned */
} cn_image;

/* Decodes a JPEG or PNG held in memory (the format is told by its signature, not by the name);
 * name is used in messages. On failure *out is left empty. */
cn_status cn_image_decode(cn_image *out, const uint8_t *buf, size_t len, const char *name);
/* Reads and decodes a file. */
cn_status cn_image_load(cn_image *out, const char *path);
/* Reads the file and checks its header (format, dimensions, colour type) without decoding the
 * pixels: the cheap test of an image folder's files. w, h may be NULL. */
cn_status cn_image_probe(const char *path, int *w, int *h);
void cn_image_free(cn_image *im); /* NULL and an empty image are no-ops */

/* 1 when the name ends in .jpg, .jpeg or .png (any case): the subset of torchvision's
 * IMG_EXTENSIONS that convnet decodes. */
int cn_image_has_ext(const char *name);

/* The same image with c channels: gray -> RGB replicates, RGB -> gray uses PIL's convert("L")
 * (ITU-R 601-2 luma in 16-bit fixed point). */
cn_status cn_image_to_channels(cn_image *im, int c);

#endif
