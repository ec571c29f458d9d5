// libfuse 3 for Swift: the version macro must come before the header.
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <linux/loop.h>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

// Swift cannot import function-like macros: fuse_session_loop_mt is one in libfuse >= 3.12
// (it names fuse_session_loop_mt_312 or the versioned symbol, depending on the build).
static inline int snf_fuse_session_loop_mt(struct fuse_session *se, struct fuse_loop_config *config) {
    return fuse_session_loop_mt(se, config);
}

/// prctl(PR_SET_IO_FLUSHER): the calling thread (and threads it creates later) serve block I/O, so
/// memory reclaim in them must not wait for I/O (prctl is variadic, which Swift cannot call).
static inline int snf_set_io_flusher(void) {
    return prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
}

/// prctl(PR_SET_NAME): names the calling thread (threads it creates later inherit the name).
static inline int snf_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, name, 0, 0, 0);
}

// Loop devices (linux/loop.h). Every helper returns what ioctl(2) returns: -1 with errno set on failure.

/// LOOP_CTL_GET_FREE on /dev/loop-control: the number of a free loop device (created if needed).
static inline int snf_loop_ctl_get_free(int control_fd) {
    return ioctl(control_fd, LOOP_CTL_GET_FREE);
}

/// LOOP_CONFIGURE: binds `backing_fd` to the loop device open as `loop_fd`, with `flags`
/// (LO_FLAGS_*) and `block_size` (0 for the kernel's default), in one step.
static inline int snf_loop_configure(int loop_fd, int backing_fd, uint32_t flags, uint32_t block_size) {
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = (uint32_t)backing_fd;
    config.block_size = block_size;
    config.info.lo_flags = flags;
    return ioctl(loop_fd, LOOP_CONFIGURE, &config);
}

/// LOOP_GET_STATUS64: the backing file's device and inode numbers and the LO_FLAGS_* in effect.
static inline int snf_loop_get_status(int loop_fd, uint64_t *device, uint64_t *inode, uint32_t *flags) {
    struct loop_info64 info;
    memset(&info, 0, sizeof info);
    int result = ioctl(loop_fd, LOOP_GET_STATUS64, &info);
    if (result == 0) {
        *device = info.lo_device;
        *inode = info.lo_inode;
        *flags = info.lo_flags;
    }
    return result;
}

/// LOOP_SET_DIRECT_IO: turns direct I/O to the backing file on (1) or off (0).
static inline int snf_loop_set_direct_io(int loop_fd, unsigned long on) {
    return ioctl(loop_fd, LOOP_SET_DIRECT_IO, on);
}

/// LOOP_CLR_FD: unbinds the backing file (deferred to the last close while others hold it open).
static inline int snf_loop_clear_fd(int loop_fd) {
    return ioctl(loop_fd, LOOP_CLR_FD, 0);
}

/// LOOP_SET_CAPACITY: re-reads the size of the backing file.
static inline int snf_loop_set_capacity(int loop_fd) {
    return ioctl(loop_fd, LOOP_SET_CAPACITY, 0);
}
