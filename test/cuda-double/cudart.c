/*
 * libgcd_cudart.so: a test double of libcudart with the symbols groupcomm's cuda plugin binds,
 * over host memory. Not a GPU emulator: enough CUDA semantics that the plugin's mistakes show.
 *   - device pointers are malloc'd host memory, tracked per device (cudaPointerGetAttributes);
 *   - each created stream is a worker thread running its items in order, asynchronously;
 *   - the legacy default stream (NULL) runs work at once, or, with GCDOUBLE_STRICT=1, only when
 *     a call synchronises with it (cudaStreamSynchronize(0), a device-to-host cudaMemcpy,
 *     cudaDeviceSynchronize, cudaFree): CUDA lets cudaMemset and a pageable host-to-device
 *     cudaMemcpy return before the device has done them, and non-blocking streams never wait
 *     for the legacy stream;
 *   - asking about the legacy stream (cudaStreamQuery(0), cudaEventQuery of an event recorded
 *     there) runs its pending work: the device progresses, so a poll for completion terminates;
 *   - gcdouble_enqueue_sleep(stream, us) puts a slow "kernel" of the caller's on a stream;
 *   - cudaFree synchronises the device, as CUDA's does (counted as free_while_busy when a stream
 *     still has work);
 *   - GCDOUBLE_DEVICES (default 8) devices; GCDOUBLE_FAIL_FREE=1 makes cudaFree fail; built
 *     with -DGCD_OLD_DRIVER it answers cudaErrorInsufficientDriver like a runtime newer than the
 *     driver.
 * Built by test/helpers/cuda_double.ts with the system C compiler.
 */
#define _GNU_SOURCE
#include "gcd.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEV 16
#define EXPORT __attribute__((visibility("default")))

/* ---- shared helpers ------------------------------------------------------------------------ */

/* Settings set by gcdouble_set win over the environment (Bun's process.env never reaches getenv). */
static pthread_mutex_t set_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { char name[48]; long v; int on; } sets[32];

EXPORT void gcdouble_set(const char *name, long v, int on) {
  pthread_mutex_lock(&set_mu);
  int i = 0, free_i = -1;
  for (; i < 32; i++) {
    if (sets[i].name[0] && !strcmp(sets[i].name, name)) break;
    if (!sets[i].name[0] && free_i < 0) free_i = i;
  }
  if (i == 32) i = free_i;
  if (i >= 0) { snprintf(sets[i].name, sizeof sets[i].name, "%s", name); sets[i].v = v; sets[i].on = on; }
  pthread_mutex_unlock(&set_mu);
}

long gcd_env_long(const char *name, long dflt) {
  pthread_mutex_lock(&set_mu);
  for (int i = 0; i < 32; i++) {
    if (sets[i].name[0] && sets[i].on && !strcmp(sets[i].name, name)) { long v = sets[i].v; pthread_mutex_unlock(&set_mu); return v; }
  }
  pthread_mutex_unlock(&set_mu);
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  return strtol(v, NULL, 10);
}

void gcd_sleep_us(long us) {
  struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
  nanosleep(&ts, NULL);
}

static pthread_mutex_t counters_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { char name[48]; long n; } counters[64];

void gcd_count(const char *name) {
  pthread_mutex_lock(&counters_mu);
  int i = 0;
  for (; i < 64 && counters[i].name[0]; i++) if (!strcmp(counters[i].name, name)) break;
  if (i < 64) {
    if (!counters[i].name[0]) snprintf(counters[i].name, sizeof counters[i].name, "%s", name);
    counters[i].n++;
  }
  pthread_mutex_unlock(&counters_mu);
  if (gcd_env_long("GCDOUBLE_VERBOSE", 0)) fprintf(stderr, "gcdouble: %s\n", name);
}

/* How often `name` happened in this process (tests read it through koffi). */
EXPORT long gcdouble_counter(const char *name) {
  long n = 0;
  pthread_mutex_lock(&counters_mu);
  for (int i = 0; i < 64 && counters[i].name[0]; i++) if (!strcmp(counters[i].name, name)) n = counters[i].n;
  pthread_mutex_unlock(&counters_mu);
  return n;
}

/* ---- devices and memory -------------------------------------------------------------------- */

static __thread int cur_dev = 0;
static __thread int last_err = 0;
void gcd_set_last_cuda_error(int rc) { if (rc) last_err = rc; }
int gcd_current_device(void) { return cur_dev; }

static int ndev(void) { long n = gcd_env_long("GCDOUBLE_DEVICES", 8); return n > MAX_DEV ? MAX_DEV : (int)n; }

typedef struct { char *base; size_t size; int device; } alloc_t;
static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;
static alloc_t *allocs;
static size_t nallocs, capallocs;

static void track(void *p, size_t n, int dev) {
  pthread_mutex_lock(&mem_mu);
  if (nallocs == capallocs) { capallocs = capallocs ? capallocs * 2 : 256; allocs = realloc(allocs, capallocs * sizeof *allocs); }
  allocs[nallocs++] = (alloc_t){ p, n, dev };
  pthread_mutex_unlock(&mem_mu);
}

static int untrack(void *p) {
  int found = 0;
  pthread_mutex_lock(&mem_mu);
  for (size_t i = 0; i < nallocs; i++) if (allocs[i].base == p) { allocs[i] = allocs[--nallocs]; found = 1; break; }
  pthread_mutex_unlock(&mem_mu);
  return found;
}

int gcd_device_of(const void *p, size_t n) {
  int dev = -1;
  const char *c = p;
  pthread_mutex_lock(&mem_mu);
  for (size_t i = 0; i < nallocs; i++) {
    if (c >= allocs[i].base && c + n <= allocs[i].base + allocs[i].size) { dev = allocs[i].device; break; }
  }
  pthread_mutex_unlock(&mem_mu);
  return dev;
}

/* ---- streams ------------------------------------------------------------------------------- */

typedef struct item { gcd_work_fn fn; void *arg; struct item *next; } item_t;

typedef struct stream {
  int device, legacy, dead;
  pthread_mutex_t mu;
  pthread_cond_t cv, idle;
  item_t *head, *tail;
  long busy; /* items queued or running */
  pthread_t thread;
} stream_t;

static stream_t legacy[MAX_DEV];
static stream_t *streams[4096];
static int nstreams;
static pthread_mutex_t streams_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t legacy_once = PTHREAD_ONCE_INIT;

static void init_legacy(void) {
  for (int d = 0; d < MAX_DEV; d++) {
    legacy[d].device = d; legacy[d].legacy = 1;
    pthread_mutex_init(&legacy[d].mu, NULL);
    pthread_cond_init(&legacy[d].cv, NULL);
    pthread_cond_init(&legacy[d].idle, NULL);
  }
}

static int strict(void) { return gcd_env_long("GCDOUBLE_STRICT", 0) != 0; }

static stream_t *resolve(void *s) {
  pthread_once(&legacy_once, init_legacy);
  return s ? (stream_t *)s : &legacy[cur_dev];
}

static void *stream_main(void *arg) {
  stream_t *s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->head && !s->dead) pthread_cond_wait(&s->cv, &s->mu);
    if (!s->head && s->dead) break;
    item_t *it = s->head;
    s->head = it->next;
    if (!s->head) s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    it->fn(it->arg);
    free(it);
    pthread_mutex_lock(&s->mu);
    if (--s->busy == 0) pthread_cond_broadcast(&s->idle);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* Runs whatever the legacy stream of `dev` holds, on this thread. */
static void flush_legacy(int dev) {
  pthread_once(&legacy_once, init_legacy);
  stream_t *s = &legacy[dev];
  pthread_mutex_lock(&s->mu);
  while (s->head) {
    item_t *it = s->head;
    s->head = it->next;
    if (!s->head) s->tail = NULL;
    it->fn(it->arg);
    free(it);
    s->busy--;
  }
  pthread_mutex_unlock(&s->mu);
}

int gcd_stream_enqueue(void *stream, gcd_work_fn fn, void *arg) {
  stream_t *s = resolve(stream);
  /* GCDOUBLE_INLINE_STREAMS=1: every stream's work runs at once on the caller (an infinitely fast
     device: what remains of a call's time is the caller's own; world size 1 only, nothing waits). */
  if ((s->legacy && !strict()) || (!s->legacy && gcd_env_long("GCDOUBLE_INLINE_STREAMS", 0))) {
    if (s->legacy) flush_legacy(s->device);
    fn(arg);
    return 0;
  }
  item_t *it = calloc(1, sizeof *it);
  it->fn = fn; it->arg = arg;
  pthread_mutex_lock(&s->mu);
  if (s->tail) s->tail->next = it; else s->head = it;
  s->tail = it;
  s->busy++;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int gcd_stream_device(void *stream) { return resolve(stream)->device; }

static void wait_idle(stream_t *s) {
  if (s->legacy) { flush_legacy(s->device); return; }
  pthread_mutex_lock(&s->mu);
  while (s->busy) pthread_cond_wait(&s->idle, &s->mu);
  pthread_mutex_unlock(&s->mu);
}

static int device_busy(int dev) {
  int busy = 0;
  pthread_mutex_lock(&streams_mu);
  for (int i = 0; i < nstreams; i++) {
    stream_t *s = streams[i];
    if (s->device != dev) continue;
    pthread_mutex_lock(&s->mu);
    if (s->busy) busy = 1;
    pthread_mutex_unlock(&s->mu);
  }
  pthread_mutex_unlock(&streams_mu);
  return busy;
}

static void sync_device(int dev) {
  flush_legacy(dev);
  pthread_mutex_lock(&streams_mu);
  int n = nstreams;
  stream_t *copy[4096];
  memcpy(copy, streams, n * sizeof *copy);
  pthread_mutex_unlock(&streams_mu);
  for (int i = 0; i < n; i++) if (copy[i]->device == dev) wait_idle(copy[i]);
}

/* ---- the CUDA runtime API ------------------------------------------------------------------- */

enum { OK = 0, eInvalidValue = 1, eMemoryAllocation = 2, eInsufficientDriver = 35, eNoDevice = 100,
       eInvalidDevice = 101, eInvalidResourceHandle = 400, eNotReady = 600, eIllegalAddress = 700 };

static int ret(int rc) { gcd_set_last_cuda_error(rc); return rc; }

EXPORT int cudaRuntimeGetVersion(int *v) { *v = 12080; return OK; }
EXPORT int cudaDriverGetVersion(int *v) {
#ifdef GCD_OLD_DRIVER
  *v = 11040;
#else
  *v = 13000;
#endif
  return OK;
}

EXPORT int cudaGetDeviceCount(int *n) {
#ifdef GCD_OLD_DRIVER
  *n = 0;
  return ret(eInsufficientDriver);
#else
  *n = ndev();
  return OK;
#endif
}

EXPORT int cudaSetDevice(int d) {
  if (d < 0 || d >= ndev()) return ret(eInvalidDevice);
  cur_dev = d;
  return OK;
}

EXPORT int cudaGetDevice(int *d) { *d = cur_dev; return OK; }

/* cudaDevAttrComputeCapabilityMajor (75) / Minor (76): GCDOUBLE_CC_MAJOR, default 9 (fp8 reductions). */
EXPORT int cudaDeviceGetAttribute(int *v, int attr, int dev) {
  if (dev < 0 || dev >= ndev()) return ret(eInvalidDevice);
  if (attr == 75) { *v = (int)gcd_env_long("GCDOUBLE_CC_MAJOR", 9); return OK; }
  if (attr == 76) { *v = 0; return OK; }
  return ret(eInvalidValue);
}

EXPORT int cudaGetLastError(void) { int e = last_err; last_err = 0; return e; }

EXPORT int cudaMalloc(void **p, size_t n) {
  void *m = malloc(n ? n : 1);
  if (!m) return ret(eMemoryAllocation);
  /* Fresh device memory holds garbage, not zeros: make it visible. */
  memset(m, 0xA5, n);
  track(m, n ? n : 1, cur_dev);
  *p = m;
  return OK;
}

static int free_now(void *p) {
  if (gcd_env_long("GCDOUBLE_FAIL_FREE", 0)) return ret(eIllegalAddress);
  if (!untrack(p)) return ret(eInvalidValue);
  free(p);
  return OK;
}

EXPORT int cudaFree(void *p) {
  if (!p) return OK;
  int dev = gcd_device_of(p, 1);
  if (dev < 0) return ret(eInvalidValue);
  /* cudaFree synchronises the device: with a kernel that never ends, it never returns. */
  if (device_busy(dev)) gcd_count("free_while_busy");
  sync_device(dev);
  return free_now(p);
}

static void free_item(void *p) { free_now(p); }

EXPORT int cudaFreeAsync(void *p, void *stream) {
  if (!p) return OK;
  if (gcd_device_of(p, 1) < 0) return ret(eInvalidValue);
  return gcd_stream_enqueue(stream, free_item, p);
}

typedef struct { char *dst; const char *src; size_t n; int value; int staged; } copy_t;

static void copy_item(void *a) {
  copy_t *c = a;
  if (c->src) memcpy(c->dst, c->src, c->n); else memset(c->dst, c->value, c->n);
  if (c->staged) free((void *)c->src);
  free(c);
}

static copy_t *mkcopy(void *dst, const void *src, size_t n, int stage) {
  copy_t *c = calloc(1, sizeof *c);
  c->dst = dst; c->n = n;
  if (stage && n) { char *s = malloc(n); memcpy(s, src, n); c->src = s; c->staged = 1; }
  else c->src = src;
  return c;
}

static int check_dev(const void *p, size_t n, const char *what) {
  if (n == 0) return OK;
  if (gcd_device_of(p, n) < 0) { gcd_count(what); return ret(eInvalidValue); }
  return OK;
}

EXPORT int cudaMemset(void *p, int v, size_t n) {
  if (check_dev(p, n, "memset_not_device")) return eInvalidValue;
  copy_t *c = mkcopy(p, NULL, n, 0);
  c->value = v;
  return gcd_stream_enqueue(NULL, copy_item, c);
}

EXPORT int cudaMemsetAsync(void *p, int v, size_t n, void *stream) {
  if (check_dev(p, n, "memset_not_device")) return eInvalidValue;
  copy_t *c = mkcopy(p, NULL, n, 0);
  c->value = v;
  return gcd_stream_enqueue(stream, copy_item, c);
}

/* kinds: 0 HostToHost, 1 HostToDevice, 2 DeviceToHost, 3 DeviceToDevice, 4 Default */
static int check_kind(void *dst, const void *src, size_t n, int kind) {
  if (kind == 1 || kind == 3) if (check_dev(dst, n, "copy_bad_device_pointer")) return eInvalidValue;
  if (kind == 2 || kind == 3) if (check_dev(src, n, "copy_bad_device_pointer")) return eInvalidValue;
  if (kind < 0 || kind > 4) return ret(eInvalidValue);
  return OK;
}

EXPORT int cudaMemcpy(void *dst, const void *src, size_t n, int kind) {
  if (check_kind(dst, src, n, kind)) return eInvalidValue;
  if (n == 0) return OK;
  if (kind == 2 || kind == 0 || (kind == 4 && gcd_device_of(dst, n) < 0)) {
    /* To pageable host memory: waits for the legacy stream, then copies (never for other streams). */
    flush_legacy(cur_dev);
    memcpy(dst, src, n);
    return OK;
  }
  /* Host to device returns once the source is staged; the copy itself is legacy-stream work. */
  return gcd_stream_enqueue(NULL, copy_item, mkcopy(dst, src, n, kind == 1));
}

EXPORT int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
  if (check_kind(dst, src, n, kind)) return eInvalidValue;
  if (n == 0) return OK;
  return gcd_stream_enqueue(stream, copy_item, mkcopy(dst, src, n, kind == 1));
}

EXPORT int cudaStreamCreateWithFlags(void **out, unsigned flags) {
  stream_t *s = calloc(1, sizeof *s);
  s->device = cur_dev;
  (void)flags;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_cond_init(&s->idle, NULL);
  pthread_mutex_lock(&streams_mu);
  if (nstreams == 4096) { pthread_mutex_unlock(&streams_mu); free(s); return ret(eMemoryAllocation); }
  streams[nstreams++] = s;
  pthread_mutex_unlock(&streams_mu);
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_create(&s->thread, &at, stream_main, s);
  pthread_attr_destroy(&at);
  *out = s;
  return OK;
}

static int known_stream(void *h) {
  if (!h) return 1;
  int ok = 0;
  pthread_mutex_lock(&streams_mu);
  for (int i = 0; i < nstreams; i++) if (streams[i] == h) ok = 1;
  pthread_mutex_unlock(&streams_mu);
  return ok;
}

EXPORT int cudaStreamSynchronize(void *h) {
  if (!known_stream(h)) return ret(eInvalidResourceHandle);
  wait_idle(resolve(h));
  return OK;
}

EXPORT int cudaStreamQuery(void *h) {
  if (!known_stream(h)) return ret(eInvalidResourceHandle);
  stream_t *s = resolve(h);
  /* The device makes progress on legacy work: asking about it runs it (strict mode defers it until then). */
  if (s->legacy) flush_legacy(s->device);
  pthread_mutex_lock(&s->mu);
  long b = s->busy;
  pthread_mutex_unlock(&s->mu);
  return b ? eNotReady : OK;
}

EXPORT int cudaStreamGetDevice(void *h, int *device) {
  if (!known_stream(h)) return ret(eInvalidResourceHandle);
  if (gcd_env_long("GCDOUBLE_NO_STREAM_DEVICE", 0)) return ret(eInvalidValue); /* a runtime before CUDA 12.8 cannot say */
  *device = gcd_stream_device(h);
  return OK;
}

EXPORT int cudaStreamDestroy(void *h) {
  if (!h || !known_stream(h)) return ret(eInvalidResourceHandle);
  stream_t *s = h;
  /* Work already queued still runs; the thread ends after it (the handle stays valid to us). */
  pthread_mutex_lock(&s->mu);
  s->dead = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return OK;
}

/* Test hook: an item on `stream` that takes `us` microseconds (a slow kernel of the caller's). */
static void sleep_item(void *a) { gcd_sleep_us((long)(intptr_t)a); }
EXPORT int gcdouble_enqueue_sleep(void *stream, long us) {
  if (!known_stream(stream)) return ret(eInvalidResourceHandle);
  return gcd_stream_enqueue(stream, sleep_item, (void *)(intptr_t)us);
}

EXPORT int cudaDeviceSynchronize(void) { sync_device(cur_dev); return OK; }

typedef struct { volatile int done; int device, legacy; } event_t;

EXPORT int cudaEventCreateWithFlags(void **out, unsigned flags) {
  (void)flags;
  event_t *e = calloc(1, sizeof *e);
  e->done = 1;
  e->device = cur_dev;
  *out = e;
  return OK;
}

static void event_item(void *a) { __atomic_store_n(&((event_t *)a)->done, 1, __ATOMIC_RELEASE); }

EXPORT int cudaEventRecord(void *ev, void *stream) {
  if (!ev || !known_stream(stream)) return ret(eInvalidResourceHandle);
  event_t *e = ev;
  if (gcd_stream_device(stream) != e->device) { gcd_count("event_device_mismatch"); return ret(eInvalidResourceHandle); }
  __atomic_store_n(&e->done, 0, __ATOMIC_RELEASE);
  e->legacy = resolve(stream)->legacy;
  return gcd_stream_enqueue(stream, event_item, e);
}

EXPORT int cudaEventQuery(void *ev) {
  if (!ev) return ret(eInvalidResourceHandle);
  event_t *e = ev;
  /* As cudaStreamQuery: an event recorded on the legacy stream is reached once that work runs. */
  if (e->legacy && !__atomic_load_n(&e->done, __ATOMIC_ACQUIRE)) flush_legacy(e->device);
  return __atomic_load_n(&((event_t *)ev)->done, __ATOMIC_ACQUIRE) ? OK : eNotReady;
}

EXPORT int cudaEventSynchronize(void *ev) {
  while (cudaEventQuery(ev) == eNotReady) gcd_sleep_us(50);
  return OK;
}

EXPORT int cudaEventDestroy(void *ev) { (void)ev; return OK; /* a late record may still touch it: leaked */ }

/* struct cudaPointerAttributes { enum cudaMemoryType type; int device; void *devicePointer; void *hostPointer; ... } */
EXPORT int cudaPointerGetAttributes(void *attr, const void *p) {
  int *a = attr;
  void **ptrs = (void **)((char *)attr + 8);
  int dev = gcd_device_of(p, 1);
  if (dev >= 0) { a[0] = 2; a[1] = dev; ptrs[0] = (void *)p; ptrs[1] = NULL; }
  else { a[0] = 0; a[1] = -2; ptrs[0] = NULL; ptrs[1] = (void *)p; }
  return OK;
}

static const struct { int rc; const char *name, *text; } errs[] = {
  { 0, "cudaSuccess", "no error" },
  { 1, "cudaErrorInvalidValue", "invalid argument" },
  { 2, "cudaErrorMemoryAllocation", "out of memory" },
  { 35, "cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version" },
  { 100, "cudaErrorNoDevice", "no CUDA-capable device is detected" },
  { 101, "cudaErrorInvalidDevice", "invalid device ordinal" },
  { 400, "cudaErrorInvalidResourceHandle", "invalid resource handle" },
  { 600, "cudaErrorNotReady", "device not ready" },
  { 700, "cudaErrorIllegalAddress", "an illegal memory access was encountered" },
};

EXPORT const char *cudaGetErrorName(int rc) {
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) if (errs[i].rc == rc) return errs[i].name;
  return "cudaErrorUnknown";
}

EXPORT const char *cudaGetErrorString(int rc) {
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) if (errs[i].rc == rc) return errs[i].text;
  return "unknown error";
}
