/* Image folders as torchvision's ImageFolder reads them: one subfolder per class, classes in
 * sorted order (byte order of the UTF-8 names, which is Python's code-point order), and in each
 * class every file below it, recursively and following symbolic links, whose name ends in a
 * supported extension (.jpg, .jpeg, .png, any case), ordered as sorted(os.walk(...)) then
 * sorted(file names). Nothing is decoded here. */
#ifndef CN_IO_FOLDER_H
#define CN_IO_FOLDER_H

#include <stdint.h>

#include "convnet.h"

typedef struct cn_folder {
    int n, nclasses;
    char **paths;      /* (n) */
    int32_t *labels;   /* (n) */
    char **classes;    /* (nclasses) folder names */
} cn_folder;

/* A directory without class folders, or a class folder without images, is CN_ERR_FORMAT
 * naming it (torchvision raises for both). On failure *f is left empty. */
cn_status cn_folder_open(cn_folder *f, const char *dir);
void cn_folder_free(cn_folder *f);

/* 1 when path is a directory (following links). */
int cn_is_dir(const char *path);

#endif
