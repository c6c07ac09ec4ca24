/*
 * The groupcomm CUDA/NCCL test double: what libgcd_nccl.so needs from libgcd_cudart.so.
 * Device memory is host memory; a stream is a thread that runs its work items in order; the
 * legacy default stream (handle NULL) runs its work on the calling thread, or, in strict mode
 * (GCDOUBLE_STRICT=1), only when something synchronises with it, as late as CUDA permits.
 * Counters (gcdouble_counter) let tests see misuse that real CUDA would punish silently.
 */
#ifndef GCD_H
#define GCD_H
#include <stddef.h>
#include <stdint.h>

#define GCD_API __attribute__((visibility("default")))

typedef void (*gcd_work_fn)(void *arg);

/* Enqueue fn(arg) on a stream (NULL = the legacy stream of the current device). */
GCD_API int gcd_stream_enqueue(void *stream, gcd_work_fn fn, void *arg);
/* The device a stream belongs to (-1 for an unknown handle). */
GCD_API int gcd_stream_device(void *stream);
GCD_API int gcd_current_device(void);
/* The allocation holding [p, p+n): its device, or -1 when it is not device memory. */
GCD_API int gcd_device_of(const void *p, size_t n);
GCD_API void gcd_count(const char *name);
GCD_API void gcd_set_last_cuda_error(int rc);
GCD_API long gcd_env_long(const char *name, long dflt);
GCD_API void gcd_sleep_us(long us);

#endif
