// SHMCAST_EXPORT marks the public API: libshmcast is built with hidden visibility, so a shared
// libshmcast exports these and nothing of its internals.
#pragma once

#define SHMCAST_EXPORT __attribute__((visibility("default")))
