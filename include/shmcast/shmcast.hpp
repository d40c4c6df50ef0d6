// shmcast: Redis-style Pub/Sub between processes on one host, over shared memory.
#pragma once

#include "shmcast/bus.hpp"
#include "shmcast/error.hpp"
#include "shmcast/host.hpp"
#include "shmcast/limits.hpp"
#include "shmcast/loan.hpp"
#include "shmcast/message.hpp"
#include "shmcast/stats.hpp"
#include "shmcast/subscriber.hpp"
#include "shmcast/wait.hpp"
