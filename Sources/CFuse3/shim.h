// libfuse 3 for Swift: the version macro must come before the header.
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
