#ifndef WSGATE_COMMON_CLOCK_H
#define WSGATE_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The two clocks the gateway reads: monotonic for deadlines and durations, Unix time
 * for what crosses machines (a signed order's ts, an envelope's ts, stream ids). */

static inline long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline long long unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif /* WSGATE_COMMON_CLOCK_H */
