/* Image preprocessing as torchvision 0.14 does it on PIL images: PIL's antialiased resize
 * (Image.resize with BILINEAR or BICUBIC), center crop, scaling to [0, 1] and normalisation
 * (the ImageClassification presets of torchvision.transforms._presets), and the training
 * augmentation RandomResizedCrop + RandomHorizontalFlip, with convnet's counter-based RNG instead
 * of torch's. All outputs are float NHWC. */
#ifndef CN_IO_TRANSFORM_H
#define CN_IO_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"
#include "core/rng.h"
#include "io/image.h"

typedef enum cn_interp { CN_INTERP_BILINEAR, CN_INTERP_BICUBIC } cn_interp;
/* "bilinear" or "bicubic"; -1 for anything else */
int cn_interp_parse(const char *s);
const char *cn_interp_name(cn_interp f);

/* PIL's ImagingResample on 8-bit samples (libImaging/Resample.c): for each output pixel the
 * filter's support is scaled by the downscale factor (antialiasing), the coefficients are
 * normalised to sum 1 and turned into 22-bit fixed point; the horizontal pass runs first and
 * rounds and clips to uint8, then the vertical pass. Resizes the whole src (sw x sh, c channels,
 * rows sstride bytes apart) to dw x dh but writes only the window (ox, oy, ow, oh) of the result
 * into dst (ow x oh x c, packed): the pixels are those of the full resize. A pass whose size does
 * not change is skipped, as in PIL. */
cn_status cn_resize_u8(uint8_t *dst, const uint8_t *src, int sw, int sh, size_t sstride, int c,
                       int dw, int dh, int ox, int oy, int ow, int oh, cn_interp f);

/* torchvision's _compute_resized_output_size for an int size: the shorter side becomes size,
 * the longer int(size * long / short). */
void cn_resize_shorter(int h, int w, int size, int *nh, int *nw);

#define CN_IMAGENET_MEAN {0.485f, 0.456f, 0.406f}
#define CN_IMAGENET_STD {0.229f, 0.224f, 0.225f}

/* ImageClassification(crop_size, resize_size, mean, std, interpolation) */
typedef struct cn_preset {
    int resize, crop;
    cn_interp interp;
    float mean[3], std[3];
} cn_preset;
/* The preset of torchvision's default weights for a model name (resnet*: 256 -> 224 bilinear;
 * efficientnet_b0..b7 as their weights declare); for other models a resize of
 * round(default_size / 0.875) and a crop of default_size, bilinear. ImageNet mean and std. */
void cn_preset_for_model(cn_preset *p, const char *model_name, int default_size);

/* preset(img): dst is (crop, crop, im->c). Crops larger than the resized image are padded with
 * black, as torchvision's center_crop. */
cn_status cn_preprocess_eval(float *dst, const cn_image *im, const cn_preset *p);

/* RandomResizedCrop.get_params(img, scale=(0.08, 1), ratio=(3/4, 4/3)): ten tries of a random
 * area and log-uniform aspect ratio, then the center-crop fallback. (i, j) top-left, (h, w). */
void cn_rrc_params(int H, int W, cn_rng *r, int *i, int *j, int *h, int *w);
/* RandomResizedCrop(size, bilinear) then, when flip, a horizontal mirror, then normalisation:
 * dst is (size, size, im->c). */
cn_status cn_preprocess_train(float *dst, const cn_image *im, int size, cn_rng *r, int use_flip,
                              const float *mean, const float *std);

#endif
