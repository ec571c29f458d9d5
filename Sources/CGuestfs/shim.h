#ifndef CGUESTFS_SHIM_H
#define CGUESTFS_SHIM_H

#include <guestfs.h>
#include <stdlib.h>

// guestfs_create_flags is variadic (Swift cannot call it): a fixed-argument wrapper.
static inline guestfs_h *cguestfs_create_flags(unsigned flags) { return guestfs_create_flags(flags); }

static const unsigned CGUESTFS_CREATE_NO_ENVIRONMENT = GUESTFS_CREATE_NO_ENVIRONMENT;
static const unsigned CGUESTFS_CREATE_NO_CLOSE_ON_EXIT = GUESTFS_CREATE_NO_CLOSE_ON_EXIT;

// The optional-argument bitmasks are (UINT64_C(1)<<n) macros, which Swift does not import.
static const uint64_t CGUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK = GUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK;
static const uint64_t CGUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK = GUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK;
static const uint64_t CGUESTFS_ADD_DRIVE_OPTS_CACHEMODE_BITMASK = GUESTFS_ADD_DRIVE_OPTS_CACHEMODE_BITMASK;
static const uint64_t CGUESTFS_E2FSCK_CORRECT_BITMASK = GUESTFS_E2FSCK_CORRECT_BITMASK;
static const uint64_t CGUESTFS_E2FSCK_FORCEALL_BITMASK = GUESTFS_E2FSCK_FORCEALL_BITMASK;
static const uint64_t CGUESTFS_MKSWAP_OPTS_LABEL_BITMASK = GUESTFS_MKSWAP_OPTS_LABEL_BITMASK;
static const uint64_t CGUESTFS_MKSWAP_OPTS_UUID_BITMASK = GUESTFS_MKSWAP_OPTS_UUID_BITMASK;
static const uint64_t CGUESTFS_XFS_GROWFS_DATASEC_BITMASK = GUESTFS_XFS_GROWFS_DATASEC_BITMASK;
static const uint64_t CGUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS_BITMASK = GUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS_BITMASK;
static const uint64_t CGUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS_BITMASK = GUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS_BITMASK;
static const uint64_t CGUESTFS_UMOUNT_OPTS_FORCE_BITMASK = GUESTFS_UMOUNT_OPTS_FORCE_BITMASK;
static const uint64_t CGUESTFS_UMOUNT_OPTS_LAZYUNMOUNT_BITMASK = GUESTFS_UMOUNT_OPTS_LAZYUNMOUNT_BITMASK;

// A NULL-terminated list of strings returned by libguestfs: free every string, then the array.
static inline void cguestfs_free_strings(char **list) {
    if (list == NULL) return;
    for (char **p = list; *p != NULL; p++) free(*p);
    free(list);
}

#endif
