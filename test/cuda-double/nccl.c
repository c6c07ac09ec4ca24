/*
 * libgcd_nccl.so: a test double of libnccl with the symbols groupcomm's cuda plugin binds, for
 * ranks in several processes on one machine. The unique id names a file (in GCDOUBLE_DIR, else
 * /dev/shm, else /tmp) that every rank maps: a header (who joined, on which device), one staging
 * slot per rank for collectives, and one mailbox per (sender, receiver) pair for send/recv.
 * Operations run on the stream's thread (libgcd_cudart.so), in issue order, like kernels: a
 * collective stages its input, meets the other ranks at a barrier in the file, computes its
 * result and meets them again; a rank that never comes leaves its peers waiting until abort.
 *
 * What NCCL checks, this checks too (counted, see gcdouble_counter): the stream's device and the
 * buffers' device against the communicator's device, handles used after abort/destroy or NULL,
 * two ranks on one device. NCCL_COMM_BLOCKING overrides the config's `blocking`, as in NCCL.
 * ncclRedOpCreatePreMulSum ops (host-immediate scalars) are checked at use (live, this
 * communicator, this datatype: redop_bad_use) and counted (redop_created, redop_destroyed); so
 * are unique ids (unique_id) and splits (comm_split), so tests can tell a split from a bootstrap.
 *
 * Fault injection, for the rank GCDOUBLE_FAULT_RANK (default: every rank):
 *   GCDOUBLE_INIT_NEVER=1          init never completes (stays ncclInProgress until abort)
 *   GCDOUBLE_HANG_OP=k             the k-th operation item (1-based, warm-up included) never ends
 *   GCDOUBLE_ASYNC_ERROR=code      after operation GCDOUBLE_ASYNC_ERROR_AT (default 1; 0: any)
 *                                  the communicator reports `code` and that operation never ends
 *   GCDOUBLE_ABORT_DELAY_MS=ms     ncclCommAbort takes this long before it acts
 *   GCDOUBLE_INIT_DELAY_MS=ms      init takes at least this long (every rank)
 *   GCDOUBLE_NCCL_VERSION=code     what ncclGetVersion answers (default 22703)
 * As in NCCL, a call that fails keeps its error on the communicator (non-blocking: every
 * communicator here), and avg or premulSum on fp8 at one rank fails (no one-rank fp8 kernel).
 *   GCDOUBLE_CC_MAJOR=n            compute capability major (libgcd_cudart; default 9: fp8 reduces)
 * Each is also settable in-process with gcdouble_set(name, value, on) (libgcd_cudart.so).
 */
#define _GNU_SOURCE
#include "gcd.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define MAXR 8
#define SLOT ((size_t)8 << 20)
#define CHUNK ((size_t)1 << 20)
#define HDR 4096

enum { ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
       ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7, ncclTimeout = 8 };

typedef struct {
  volatile int32_t nranks, joined;
  volatile int32_t dev[MAXR]; /* device + 1; 0: not arrived */
  volatile uint64_t bar;
  volatile int32_t split_color[MAXR], split_key[MAXR]; /* ncclCommSplit's exchange */
} hdr_t;

typedef struct { volatile uint64_t w, r, len, pad[5]; char data[CHUNK]; } mbox_t;

#define MAP_BYTES (HDR + MAXR * SLOT + (size_t)MAXR * MAXR * sizeof(mbox_t))

typedef struct comm {
  int rank, n, device;
  volatile int init_state, async_err, aborted, destroyed;
  volatile long inflight;
  long nops;
  uint64_t nbar;
  char path[120];
  char *map;
  pthread_t init_thread;
  int has_init_thread;
  int fault;
  int nsplit;
  volatile int split_pending; /* as NCCL: a split is a job on the parent, which reads ncclInProgress until it is done */
  struct comm *parent; /* ncclCommSplit: the communicator being split, and this rank's color/key */
  int color, key;
} comm_t;

/* One text for the process, like NCCL's: the stream threads set it too. */
static char last_error[512];
__attribute__((format(printf, 1, 2))) static void set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  if (gcd_env_long("GCDOUBLE_VERBOSE", 0)) fprintf(stderr, "gcdouble nccl: %s\n", last_error);
}

static pthread_mutex_t comms_mu = PTHREAD_MUTEX_INITIALIZER;
static comm_t *comms[1024];
static int ncomms;

/* A live communicator, or NULL (counted: NCCL would read freed memory or crash). */
static comm_t *live(void *h, const char *what) {
  if (!h) { gcd_count("null_comm"); set_error("%s: NULL communicator", what); return NULL; }
  comm_t *c = NULL;
  pthread_mutex_lock(&comms_mu);
  for (int i = 0; i < ncomms; i++) if (comms[i] == h) c = h;
  pthread_mutex_unlock(&comms_mu);
  if (!c) { gcd_count("bad_comm"); set_error("%s: not a communicator", what); return NULL; }
  if (c->destroyed) { gcd_count("comm_after_free"); set_error("%s: communicator used after abort/destroy", what); return NULL; }
  return c;
}

/* Pause in a wait loop; -1 when the communicator was aborted meanwhile. */
static int backoff(comm_t *c, long *spins) {
  if (__atomic_load_n(&c->aborted, __ATOMIC_ACQUIRE)) return -1;
  long s = (*spins)++;
  if (s < 200) __builtin_ia32_pause();
  else if (s < 400) sched_yield();
  else gcd_sleep_us(s < 2000 ? 20 : 200);
  return 0;
}

static hdr_t *hdr(comm_t *c) { return (hdr_t *)c->map; }
static char *slot(comm_t *c, int r) { return c->map + HDR + (size_t)r * SLOT; }
static mbox_t *mbox(comm_t *c, int src, int dst) {
  return (mbox_t *)(c->map + HDR + MAXR * SLOT + ((size_t)src * MAXR + dst) * sizeof(mbox_t));
}

static int barrier(comm_t *c) {
  if (c->n == 1) return 0;
  uint64_t target = ++c->nbar * (uint64_t)c->n;
  __atomic_add_fetch(&hdr(c)->bar, 1, __ATOMIC_ACQ_REL);
  long spins = 0;
  while (__atomic_load_n(&hdr(c)->bar, __ATOMIC_ACQUIRE) < target) if (backoff(c, &spins)) return -1;
  return 0;
}

/* ---- version, errors, unique id ------------------------------------------------------------ */

EXPORT int ncclGetVersion(int *v) { *v = (int)gcd_env_long("GCDOUBLE_NCCL_VERSION", 22703); return ncclSuccess; }

EXPORT const char *ncclGetErrorString(int rc) {
  switch (rc) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    case ncclTimeout: return "NCCL timeout";
    default: return "unknown result code";
  }
}

EXPORT const char *ncclGetLastError(void *comm) { (void)comm; return last_error; }

typedef struct { char internal[128]; } ncclUniqueId;

EXPORT int ncclGetUniqueId(ncclUniqueId *id) {
  static volatile int seq;
  gcd_count("unique_id");
  const char *dir = getenv("GCDOUBLE_DIR");
  if (!dir || !*dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  memset(id, 0, sizeof *id);
  memcpy(id->internal, "GCD1", 4);
  int n = snprintf(id->internal + 4, 120, "%s/gcdouble-%d-%d-%lx", dir, (int)getpid(),
                   __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED), (long)(ts.tv_nsec ^ ts.tv_sec));
  if (n >= 120) { set_error("ncclGetUniqueId: GCDOUBLE_DIR too long"); return ncclInvalidArgument; }
  return ncclSuccess;
}

/* ---- communicator creation ------------------------------------------------------------------ */

static int faulty(int rank) { long f = gcd_env_long("GCDOUBLE_FAULT_RANK", -1); return f < 0 || f == rank; }

static int join(comm_t *c) {
  int fd = open(c->path, O_RDWR | O_CREAT, 0600);
  if (fd < 0) { set_error("init: cannot open %s", c->path); return ncclSystemError; }
  struct stat st;
  if (fstat(fd, &st) == 0 && (size_t)st.st_size < MAP_BYTES && ftruncate(fd, MAP_BYTES) != 0) {
    close(fd); set_error("init: cannot size %s", c->path); return ncclSystemError;
  }
  void *m = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) { set_error("init: cannot map %s", c->path); return ncclSystemError; }
  c->map = m;
  hdr_t *h = hdr(c);
  int32_t zero = 0;
  if (!__atomic_compare_exchange_n(&h->nranks, &zero, c->n, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) && zero != c->n) {
    set_error("init: the communicator has %d ranks, this rank says %d", zero, c->n);
    return ncclInvalidUsage;
  }
  zero = 0;
  if (!__atomic_compare_exchange_n(&h->dev[c->rank], &zero, c->device + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    set_error("init: rank %d joined twice", c->rank);
    return ncclInvalidUsage;
  }
  if (__atomic_add_fetch(&h->joined, 1, __ATOMIC_ACQ_REL) == c->n) unlink(c->path); /* everyone has it mapped */
  long spins = 0;
  while (__atomic_load_n(&h->joined, __ATOMIC_ACQUIRE) < c->n) if (backoff(c, &spins)) return ncclInvalidUsage;
  for (int r = 0; r < c->n; r++) {
    if (r != c->rank && h->dev[r] == c->device + 1) {
      gcd_count("duplicate_device");
      set_error("Duplicate GPU detected: rank %d and rank %d both on device %d", c->rank, r, c->device);
      return ncclInvalidUsage;
    }
  }
  return ncclSuccess;
}

static void *init_main(void *arg) {
  comm_t *c = arg;
  long delay = gcd_env_long("GCDOUBLE_INIT_DELAY_MS", 0);
  if (delay > 0) gcd_sleep_us(delay * 1000);
  if (c->fault && gcd_env_long("GCDOUBLE_INIT_NEVER", 0)) {
    long spins = 0;
    while (!backoff(c, &spins)) {}
    __atomic_store_n(&c->init_state, ncclInvalidUsage, __ATOMIC_RELEASE);
    return NULL;
  }
  int rc = join(c);
  __atomic_store_n(&c->init_state, rc, __ATOMIC_RELEASE);
  return NULL;
}

static int init(void **out, int n, ncclUniqueId id, int rank, int blocking) {
  if (n < 1 || n > MAXR || rank < 0 || rank >= n) { set_error("init: rank %d of %d", rank, n); return ncclInvalidArgument; }
  if (memcmp(id.internal, "GCD1", 4) != 0) { set_error("init: not a unique id from this library"); return ncclInvalidArgument; }
  long env = gcd_env_long("NCCL_COMM_BLOCKING", -1);
  if (env >= 0) blocking = env != 0; /* as NCCL: the environment wins over the config */
  comm_t *c = calloc(1, sizeof *c);
  c->rank = rank; c->n = n; c->device = gcd_current_device();
  c->fault = faulty(rank);
  memcpy(c->path, id.internal + 4, sizeof c->path - 1);
  c->init_state = ncclInProgress;
  pthread_mutex_lock(&comms_mu);
  comms[ncomms++ % 1024] = c;
  pthread_mutex_unlock(&comms_mu);
  *out = c;
  if (blocking) {
    init_main(c);
    return c->init_state;
  }
  c->has_init_thread = 1;
  pthread_create(&c->init_thread, NULL, init_main, c);
  return ncclInProgress;
}

EXPORT int ncclCommInitRank(void **out, int n, ncclUniqueId id, int rank) { return init(out, n, id, rank, 1); }

/* ncclCommSplit's collective part, on its own thread: every parent rank publishes its color and
   key in the parent's file, then each color's ranks (ordered by key, then parent rank) join a new
   file named after the parent's. */
static void *split_main(void *arg) {
  comm_t *c = arg, *p = c->parent;
  hdr_t *h = hdr(p);
  h->split_color[p->rank] = c->color;
  h->split_key[p->rank] = c->key;
  int rc = barrier(p) ? ncclInvalidUsage : ncclSuccess;
  int n = 0, me = 0;
  for (int r = 0; r < p->n && !rc; r++) {
    if (h->split_color[r] != c->color) continue;
    if (h->split_key[r] < c->key || (h->split_key[r] == c->key && r < p->rank)) me++;
    n++;
  }
  if (!rc && barrier(p)) rc = ncclInvalidUsage; /* everyone has read before the next split writes */
  if (!rc && c->color >= 0) {
    c->rank = me; c->n = n;
    c->fault = faulty(me);
    snprintf(c->path, sizeof c->path, "%.90s-s%d-c%d", p->path, p->nsplit, c->color);
    rc = join(c);
  }
  __atomic_store_n(&c->init_state, rc, __ATOMIC_RELEASE);
  __atomic_sub_fetch(&p->split_pending, 1, __ATOMIC_ACQ_REL);
  return NULL;
}

/* ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config) */
EXPORT int ncclCommSplit(void *h, int color, int key, void **out, void *config) {
  (void)config; /* always non-blocking here: completion through ncclCommGetAsyncError(newcomm) */
  comm_t *p = live(h, "ncclCommSplit");
  if (!p) return ncclInvalidArgument;
  gcd_count("comm_split");
  if (p->init_state != ncclSuccess || p->aborted) { set_error("ncclCommSplit: the parent is not usable"); return ncclInvalidUsage; }
  comm_t *c = calloc(1, sizeof *c);
  c->parent = p; c->color = color < 0 ? -1 : color; c->key = key; c->device = p->device;
  c->init_state = ncclInProgress;
  p->nsplit++;
  __atomic_add_fetch(&p->split_pending, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_lock(&comms_mu);
  comms[ncomms++ % 1024] = c;
  pthread_mutex_unlock(&comms_mu);
  c->has_init_thread = 1;
  pthread_create(&c->init_thread, NULL, split_main, c);
  /* NCCL_SPLIT_NOCOLOR: no new communicator for this rank (its part of the exchange still runs). */
  *out = color < 0 ? NULL : c;
  return ncclInProgress;
}

/* ncclConfig_t: size_t size; unsigned magic; unsigned version; int blocking; ... */
EXPORT int ncclCommInitRankConfig(void **out, int n, ncclUniqueId id, int rank, void *config) {
  int blocking = 1;
  if (config) {
    const char *b = config;
    unsigned magic; int bl;
    memcpy(&magic, b + 8, 4);
    memcpy(&bl, b + 16, 4);
    if (magic != 0xcafebeefu) { set_error("config: bad magic"); return ncclInvalidArgument; }
    if (bl != (int)0x80000000) blocking = bl;
  }
  return init(out, n, id, rank, blocking);
}

EXPORT int ncclCommGetAsyncError(void *h, int *st) {
  comm_t *c = live(h, "ncclCommGetAsyncError");
  if (!c) return ncclInvalidArgument;
  int s = __atomic_load_n(&c->init_state, __ATOMIC_ACQUIRE);
  *st = s != ncclSuccess ? s : __atomic_load_n(&c->async_err, __ATOMIC_ACQUIRE);
  if (*st == ncclSuccess && __atomic_load_n(&c->split_pending, __ATOMIC_ACQUIRE) > 0) *st = ncclInProgress;
  return ncclSuccess;
}

EXPORT int ncclCommCount(void *h, int *n) { comm_t *c = live(h, "ncclCommCount"); if (!c) return ncclInvalidArgument; *n = c->n; return ncclSuccess; }
EXPORT int ncclCommCuDevice(void *h, int *d) { comm_t *c = live(h, "ncclCommCuDevice"); if (!c) return ncclInvalidArgument; *d = c->device; return ncclSuccess; }
EXPORT int ncclCommUserRank(void *h, int *r) { comm_t *c = live(h, "ncclCommUserRank"); if (!c) return ncclInvalidArgument; *r = c->rank; return ncclSuccess; }

static void release(comm_t *c) {
  long spins = 0;
  while (__atomic_load_n(&c->inflight, __ATOMIC_ACQUIRE) > 0) { spins++; gcd_sleep_us(spins < 100 ? 20 : 500); }
  if (c->has_init_thread) pthread_join(c->init_thread, NULL);
  if (c->init_state != ncclSuccess) unlink(c->path); /* nobody else will: not everyone joined */
  /* The mapping stays: a late reader in this process must not fault (a double, not a leak check). */
  c->destroyed = 1;
}

EXPORT int ncclCommAbort(void *h) {
  comm_t *c = live(h, "ncclCommAbort");
  if (!c) return h ? ncclInvalidArgument : ncclSuccess;
  long delay = c->fault ? gcd_env_long("GCDOUBLE_ABORT_DELAY_MS", 0) : 0;
  if (delay > 0) gcd_sleep_us(delay * 1000);
  __atomic_store_n(&c->aborted, 1, __ATOMIC_RELEASE);
  release(c);
  return ncclSuccess;
}

EXPORT int ncclCommDestroy(void *h) {
  comm_t *c = live(h, "ncclCommDestroy");
  if (!c) return h ? ncclInvalidArgument : ncclSuccess;
  release(c); /* waits for every operation: with a peer gone, forever (as NCCL) */
  return ncclSuccess;
}

/* ---- reductions ------------------------------------------------------------------------------ */

static const size_t ES[12] = { 1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1 };

static float h2f(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, u;
  if (e == 0) {
    if (!m) u = s;
    else { e = 113; while (!(m & 1024)) { m <<= 1; e--; } u = s | (e << 23) | ((m & 1023) << 13); }
  } else if (e == 31) u = s | 0x7f800000 | (m << 13);
  else u = s | ((e + 112) << 23) | (m << 13);
  float f; memcpy(&f, &u, 4); return f;
}

static uint16_t f2h(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  uint32_t s = (u >> 16) & 0x8000;
  int e = (int)((u >> 23) & 255) - 112;
  uint32_t m = u & 0x7fffff;
  if (((u >> 23) & 255) == 255) return (uint16_t)(s | 0x7c00 | (m ? 0x200 : 0));
  if (e >= 31) return (uint16_t)(s | 0x7c00);
  if (e <= 0) {
    if (e < -10) return (uint16_t)s;
    m |= 0x800000;
    int shift = 14 - e;
    uint32_t hm = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (hm & 1))) hm++;
    return (uint16_t)(s | hm);
  }
  uint32_t hm = m >> 13, rem = m & 0x1fff;
  uint32_t r = s | ((uint32_t)e << 10) | hm;
  if (rem > 0x1000 || (rem == 0x1000 && (hm & 1))) r++;
  return (uint16_t)r;
}

static float bf2f(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t f2bf(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return (uint16_t)(u >> 16); }

/* fp8: float8_e4m3fn (bias 7, no infinity, 0x7f/0xff NaN) and float8_e5m2 (bias 15, IEEE-like). */
static double fp8_dec(uint8_t b, int e5) {
  int M = e5 ? 2 : 3, bias = e5 ? 15 : 7, f = (b >> M) & (e5 ? 31 : 15), m = b & ((1 << M) - 1);
  if (!e5 && f == 15 && m == 7) return NAN;
  if (e5 && f == 31) return m ? NAN : (b & 0x80 ? -INFINITY : INFINITY);
  double v = f == 0 ? ldexp(m, 1 - bias - M) : ldexp(m + (1 << M), f - bias - M);
  return b & 0x80 ? -v : v;
}
/* Nearest finite code, ties to the even code (by search: 256 candidates, fine for a test double). */
static uint8_t fp8_enc(double x, int e5) {
  if (isnan(x)) return 0x7f;
  int best = 0;
  double bd = INFINITY;
  for (int c = 0; c < 256; c++) {
    double v = fp8_dec((uint8_t)c, e5);
    if (isnan(v) || isinf(v)) continue;
    double d = fabs(v - x);
    if (d < bd || (d == bd && (best & 1) && !(c & 1))) { bd = d; best = c; }
  }
  return (uint8_t)best;
}

static double getf(const char *p, int dt, size_t i) {
  switch (dt) {
    case 10: case 11: return fp8_dec(((const uint8_t *)p)[i], dt == 11);
    case 6: return h2f(((const uint16_t *)p)[i]);
    case 7: return ((const float *)p)[i];
    case 8: return ((const double *)p)[i];
    default: return bf2f(((const uint16_t *)p)[i]);
  }
}
static void putf(char *p, int dt, size_t i, double v) {
  switch (dt) {
    case 10: case 11: ((uint8_t *)p)[i] = fp8_enc(v, dt == 11); break;
    case 6: ((uint16_t *)p)[i] = f2h((float)v); break;
    case 7: ((float *)p)[i] = (float)v; break;
    case 8: ((double *)p)[i] = v; break;
    default: ((uint16_t *)p)[i] = f2bf((float)v); break;
  }
}
static int64_t geti(const char *p, int dt, size_t i) {
  switch (dt) {
    case 0: return ((const int8_t *)p)[i];
    case 1: return ((const uint8_t *)p)[i];
    case 2: return ((const int32_t *)p)[i];
    case 3: return ((const uint32_t *)p)[i];
    default: return ((const int64_t *)p)[i];
  }
}
static void puti(char *p, int dt, size_t i, uint64_t v) {
  switch (dt) {
    case 0: case 1: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case 2: case 3: ((uint32_t *)p)[i] = (uint32_t)v; break;
    default: ((uint64_t *)p)[i] = v; break;
  }
}

/* ncclRedOpCreatePreMulSum's ops: the scalar as the datatype holds it, read at creation
   (ncclScalarHostImmediate). An op value >= 5 names slot op - 5. */
typedef struct { int used, dt; double f; uint64_t i; void *comm; } redop_t;
static redop_t redops[256];
static pthread_mutex_t redops_mu = PTHREAD_MUTEX_INITIALIZER;
#define NUM_OPS 5
#define DO_REDUCE(o, out, src, n, count) ((o)->premul ? premul_reduce(out, src, n, count, (o)->dt, (o)->pf, (o)->pk) : reduce(out, src, n, count, (o)->dt, (o)->op))

/* sum over r of src[r][i] * scalar, in the datatype's arithmetic for integers (wrapping). */
static void premul_reduce(char *out, char *const *src, int n, size_t count, int dt, double f, uint64_t k) {
  for (size_t i = 0; i < count; i++) {
    if (dt >= 6) {
      double a = 0;
      for (int r = 0; r < n; r++) a += getf(src[r], dt, i) * f;
      putf(out, dt, i, a);
    } else {
      uint64_t a = 0;
      for (int r = 0; r < n; r++) a += (uint64_t)geti(src[r], dt, i) * k;
      puti(out, dt, i, a);
    }
  }
}

/* out[i] = op over r of src[r][i], in rank order. */
static void reduce(char *out, char *const *src, int n, size_t count, int dt, int op) {
  int isf = dt >= 6;
  for (size_t i = 0; i < count; i++) {
    if (isf) {
      double a = getf(src[0], dt, i);
      for (int r = 1; r < n; r++) {
        double b = getf(src[r], dt, i);
        a = op == 1 ? a * b : op == 2 ? (b > a ? b : a) : op == 3 ? (b < a ? b : a) : a + b;
      }
      putf(out, dt, i, op == 4 ? a / n : a);
    } else if (dt == 5) {
      uint64_t a = (uint64_t)geti(src[0], dt, i);
      for (int r = 1; r < n; r++) {
        uint64_t b = (uint64_t)geti(src[r], dt, i);
        a = op == 1 ? a * b : op == 2 ? (b > a ? b : a) : op == 3 ? (b < a ? b : a) : a + b;
      }
      puti(out, dt, i, op == 4 ? a / (uint64_t)n : a);
    } else {
      int64_t a = geti(src[0], dt, i);
      for (int r = 1; r < n; r++) {
        int64_t b = geti(src[r], dt, i);
        a = op == 1 ? (int64_t)((uint64_t)a * (uint64_t)b) : op == 2 ? (b > a ? b : a) : op == 3 ? (b < a ? b : a) : (int64_t)((uint64_t)a + (uint64_t)b);
      }
      puti(out, dt, i, (uint64_t)(op == 4 ? a / n : a));
    }
  }
}

/* ---- operations ------------------------------------------------------------------------------ */

enum { ALLREDUCE, ALLGATHER, REDUCESCATTER, BROADCAST, REDUCE, SEND, RECV };

typedef struct { int kind, dt, op, root, peer; const char *send; char *recv; size_t count; int premul; double pf; uint64_t pk; } op_t;
typedef struct { comm_t *c; int nops; op_t ops[]; } item_t;

static int run_coll(comm_t *c, const op_t *o) {
  size_t es = ES[o->dt], bytes = o->count * es;
  int n = c->n, me = c->rank;
  char *src[MAXR];
  for (int r = 0; r < n; r++) src[r] = slot(c, r);
  size_t staged = o->kind == REDUCESCATTER ? bytes * n : bytes;
  if (!(o->kind == BROADCAST && me != o->root) && staged) memcpy(slot(c, me), o->send, staged);
  if (barrier(c)) return -1;
  switch (o->kind) {
    case ALLREDUCE: DO_REDUCE(o, o->recv, src, n, o->count); break;
    case REDUCE: if (me == o->root) DO_REDUCE(o, o->recv, src, n, o->count); break;
    case REDUCESCATTER: {
      char *part[MAXR];
      for (int r = 0; r < n; r++) part[r] = src[r] + me * bytes;
      DO_REDUCE(o, o->recv, part, n, o->count);
      break;
    }
    case ALLGATHER: for (int r = 0; r < n; r++) memcpy(o->recv + r * bytes, src[r], bytes); break;
    case BROADCAST: memcpy(o->recv, src[o->root], bytes); break;
  }
  return barrier(c);
}

/* Sends and receives of one group, progressed together (a blocking order could deadlock). */
static int run_p2p(comm_t *c, const op_t *ops, int k) {
  size_t off[64] = { 0 };
  int left = 0;
  for (int i = 0; i < k; i++) if (ops[i].count) left++;
  long spins = 0;
  while (left) {
    int moved = 0;
    for (int i = 0; i < k; i++) {
      const op_t *o = &ops[i];
      size_t bytes = o->count * ES[o->dt];
      if (!o->count || off[i] == bytes) continue;
      int blocked = 0; /* one pair's messages go in issue order */
      for (int j = 0; j < i; j++) if (ops[j].kind == o->kind && ops[j].peer == o->peer && ops[j].count && off[j] < ops[j].count * ES[ops[j].dt]) blocked = 1;
      if (blocked) continue;
      mbox_t *m = o->kind == SEND ? mbox(c, c->rank, o->peer) : mbox(c, o->peer, c->rank);
      uint64_t w = __atomic_load_n(&m->w, __ATOMIC_ACQUIRE), r = __atomic_load_n(&m->r, __ATOMIC_ACQUIRE);
      if (o->kind == SEND && w == r) {
        size_t n = bytes - off[i] < CHUNK ? bytes - off[i] : CHUNK;
        memcpy(m->data, o->send + off[i], n);
        m->len = n;
        __atomic_store_n(&m->w, w + 1, __ATOMIC_RELEASE);
        off[i] += n; moved = 1;
      } else if (o->kind == RECV && w > r) {
        size_t n = m->len;
        if (off[i] + n > bytes) { gcd_count("p2p_size_mismatch"); n = bytes - off[i]; }
        memcpy(o->recv + off[i], m->data, n);
        __atomic_store_n(&m->r, r + 1, __ATOMIC_RELEASE);
        off[i] += n; moved = 1;
      }
      if (off[i] == bytes) left--;
    }
    if (moved) spins = 0;
    else if (backoff(c, &spins)) return -1;
  }
  return 0;
}

static void stall(comm_t *c) { long spins = 0; while (!backoff(c, &spins)) {} }

static void run_item(void *arg) {
  item_t *it = arg;
  comm_t *c = it->c;
  long idx = __atomic_add_fetch(&c->nops, 1, __ATOMIC_ACQ_REL);
  gcd_count("op_items");
  if (!c->aborted) {
    if (c->fault && gcd_env_long("GCDOUBLE_HANG_OP", 0) == idx) stall(c);
    for (int i = 0; i < it->nops && !c->aborted;) {
      if (it->ops[i].kind == SEND || it->ops[i].kind == RECV) {
        int j = i;
        while (j < it->nops && (it->ops[j].kind == SEND || it->ops[j].kind == RECV)) j++;
        if (run_p2p(c, it->ops + i, j - i)) break;
        i = j;
      } else {
        if (run_coll(c, &it->ops[i])) break;
        i++;
      }
    }
    long code = c->fault ? gcd_env_long("GCDOUBLE_ASYNC_ERROR", 0) : 0, at = gcd_env_long("GCDOUBLE_ASYNC_ERROR_AT", 1);
    if (code && (at == 0 || idx == at)) {
      set_error("gcdouble: injected async error %ld on rank %d", code, c->rank);
      __atomic_store_n(&c->async_err, (int)code, __ATOMIC_RELEASE);
      stall(c); /* the kernel that failed does not finish */
    }
  }
  __atomic_sub_fetch(&c->inflight, 1, __ATOMIC_ACQ_REL);
  free(it);
}

/* The calling thread's group: ncclGroupStart … ncclGroupEnd collect, the end enqueues. */
static __thread int depth;
static __thread op_t gops[64];
static __thread int ngops;
static __thread comm_t *gcomm;
static __thread void *gstream;
static __thread int gerr;

static int enqueue(comm_t *c, void *stream, const op_t *ops, int k) {
  item_t *it = malloc(sizeof *it + k * sizeof *ops);
  it->c = c; it->nops = k;
  memcpy(it->ops, ops, k * sizeof *ops);
  __atomic_add_fetch(&c->inflight, 1, __ATOMIC_ACQ_REL);
  gcd_stream_enqueue(stream, run_item, it);
  return ncclSuccess;
}

/* A non-blocking NCCL communicator keeps the error of a call that failed as its async error
 * (ncclEnqueueCheck's and ncclGroupEnd's failure paths): every later call, and
 * ncclCommGetAsyncError, answer it until the communicator is aborted. */
static int fail(comm_t *c, int rc) {
  int none = ncclSuccess;
  if (!c->aborted) __atomic_compare_exchange_n(&c->async_err, &none, rc, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  gcd_count("sticky_errors");
  return rc;
}

static int submit(void *h, void *stream, op_t o, const char *what) {
  comm_t *c = live(h, what);
  if (!c) return ncclInvalidArgument;
  if (c->init_state != ncclSuccess) { set_error("%s: the communicator is not initialised (state %d)", what, c->init_state); return fail(c, ncclInvalidUsage); }
  if (c->aborted) { set_error("%s: communicator aborted", what); return fail(c, ncclInvalidUsage); }
  int kept = __atomic_load_n(&c->async_err, __ATOMIC_ACQUIRE);
  if (kept != ncclSuccess) { set_error("%s: the communicator keeps an earlier error (%d)", what, kept); return kept; }
  if (o.dt < 0 || o.dt > 11) { set_error("%s: invalid datatype %d", what, o.dt); return fail(c, ncclInvalidArgument); }
  int reduces = o.kind == ALLREDUCE || o.kind == REDUCE || o.kind == REDUCESCATTER;
  if (reduces && o.op >= NUM_OPS && o.op < NUM_OPS + 256) {
    /* A premulSum op: it must be live, of this communicator and this datatype; its scalar travels with the operation. */
    pthread_mutex_lock(&redops_mu);
    redop_t r = redops[o.op - NUM_OPS];
    pthread_mutex_unlock(&redops_mu);
    if (!r.used || r.comm != c || r.dt != o.dt) {
      gcd_count("redop_bad_use");
      set_error("%s: reduction op %d is not a live op of this communicator for datatype %d", what, o.op, o.dt);
      return fail(c, ncclInvalidArgument);
    }
    o.premul = 1; o.pf = r.f; o.pk = r.i;
  } else if (reduces && (o.op < 0 || o.op > 4)) { set_error("%s: invalid reduction op %d on datatype %d", what, o.op, o.dt); return fail(c, ncclInvalidArgument); }
  if (reduces && o.dt >= 10 && (gcd_env_long("GCDOUBLE_CC_MAJOR", 9) < 9 || gcd_env_long("GCDOUBLE_NCCL_VERSION", 22703) < 22400)) {
    set_error("%s: fp8 reductions need sm_90 and NCCL 2.24", what);
    return fail(c, ncclInvalidArgument);
  }
  if (reduces && c->n == 1 && o.dt >= 10 && (o.premul || o.op == 4)) {
    /* NCCL scales one rank's data in ncclLaunchOneRank, whose fp8 cases are compiled out (a
     * __CUDA_ARCH__ test in host code): 2.24 to 2.28.9 and the newest source seen. */
    set_error("%s: ncclLaunchOneRank has no fp8 kernel (avg or premulSum at one rank)", what);
    return fail(c, ncclInvalidArgument);
  }
  if ((o.kind == BROADCAST || o.kind == REDUCE) && (o.root < 0 || o.root >= c->n)) { set_error("%s: invalid root %d", what, o.root); return fail(c, ncclInvalidArgument); }
  if ((o.kind == SEND || o.kind == RECV) && (o.peer < 0 || o.peer >= c->n)) { set_error("%s: invalid peer %d", what, o.peer); return fail(c, ncclInvalidArgument); }
  int sd = gcd_stream_device(stream);
  if (sd != c->device) {
    gcd_count("stream_device_mismatch");
    set_error("%s: stream of device %d, communicator on device %d", what, sd, c->device);
    return fail(c, ncclUnhandledCudaError);
  }
  size_t bytes = o.count * ES[o.dt];
  size_t in = o.kind == REDUCESCATTER ? bytes * c->n : bytes, out = o.kind == ALLGATHER ? bytes * c->n : bytes;
  if (in > SLOT && o.kind != SEND && o.kind != RECV) { set_error("%s: %zu bytes exceed the double's staging slot (%zu)", what, in, SLOT); return fail(c, ncclInvalidUsage); }
  int sends = o.kind != RECV && !(o.kind == BROADCAST && c->rank != o.root);
  int recvs = o.kind != SEND && !(o.kind == REDUCE && c->rank != o.root);
  if (bytes && ((sends && gcd_device_of(o.send, in) != c->device) || (recvs && gcd_device_of(o.recv, out) != c->device))) {
    gcd_count("buffer_not_on_device");
    set_error("%s: a buffer is not device memory of device %d", what, c->device);
    return fail(c, ncclInvalidArgument);
  }
  if (depth > 0) {
    if (gcomm && (gcomm != c || gstream != stream)) { gerr = ncclInvalidUsage; set_error("%s: one communicator and stream per group in this double", what); return fail(c, ncclInvalidUsage); }
    if (ngops == 64) { gerr = ncclInvalidUsage; set_error("%s: more than 64 operations in a group", what); return fail(c, ncclInvalidUsage); }
    gcomm = c; gstream = stream; gops[ngops++] = o;
    return ncclSuccess;
  }
  return enqueue(c, stream, &o, 1);
}

/* ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar, ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm) */
EXPORT int ncclRedOpCreatePreMulSum(int *op, void *scalar, int dt, int residence, void *h) {
  comm_t *c = live(h, "ncclRedOpCreatePreMulSum");
  if (!c) return ncclInvalidArgument;
  if (dt < 0 || dt > 11 || !scalar) { set_error("ncclRedOpCreatePreMulSum: invalid datatype %d or NULL scalar", dt); return ncclInvalidArgument; }
  if (residence != 1) { set_error("ncclRedOpCreatePreMulSum: this double takes ncclScalarHostImmediate only"); return ncclInvalidArgument; }
  int kept = __atomic_load_n(&c->async_err, __ATOMIC_ACQUIRE); /* ncclCommEnsureReady */
  if (kept != ncclSuccess) { set_error("ncclRedOpCreatePreMulSum: the communicator keeps an earlier error (%d)", kept); return kept; }
  pthread_mutex_lock(&redops_mu);
  int k = 0;
  while (k < 256 && redops[k].used) k++;
  if (k < 256) redops[k] = (redop_t){ 1, dt, dt >= 6 ? getf(scalar, dt, 0) : 0, dt < 6 ? (uint64_t)geti(scalar, dt, 0) : 0, c };
  pthread_mutex_unlock(&redops_mu);
  if (k == 256) { set_error("ncclRedOpCreatePreMulSum: more than 256 live ops (leaked?)"); return ncclInternalError; }
  gcd_count("redop_created");
  *op = NUM_OPS + k;
  return ncclSuccess;
}

/* ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm) */
EXPORT int ncclRedOpDestroy(int op, void *h) {
  comm_t *c = live(h, "ncclRedOpDestroy");
  if (!c) return ncclInvalidArgument;
  int k = op - NUM_OPS, ok = 0;
  pthread_mutex_lock(&redops_mu);
  if (k >= 0 && k < 256 && redops[k].used && redops[k].comm == c) { redops[k].used = 0; ok = 1; }
  pthread_mutex_unlock(&redops_mu);
  if (!ok) { gcd_count("redop_bad_destroy"); set_error("ncclRedOpDestroy: %d is not a live op of this communicator", op); return ncclInvalidArgument; }
  gcd_count("redop_destroyed");
  return ncclSuccess;
}

EXPORT int ncclGroupStart(void) { depth++; return ncclSuccess; }

EXPORT int ncclGroupEnd(void) {
  if (depth == 0) { set_error("ncclGroupEnd without ncclGroupStart"); return ncclInvalidUsage; }
  if (--depth > 0) return ncclSuccess;
  int rc = gerr;
  if (rc && gcomm) fail(gcomm, rc);
  if (!rc && ngops) rc = enqueue(gcomm, gstream, gops, ngops);
  ngops = 0; gcomm = NULL; gstream = NULL; gerr = 0;
  return rc;
}

EXPORT int ncclAllReduce(const void *s, void *r, size_t count, int dt, int op, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ ALLREDUCE, dt, op, 0, 0, s, r, count }, "ncclAllReduce");
}
EXPORT int ncclAllGather(const void *s, void *r, size_t count, int dt, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ ALLGATHER, dt, 0, 0, 0, s, r, count }, "ncclAllGather");
}
EXPORT int ncclReduceScatter(const void *s, void *r, size_t count, int dt, int op, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ REDUCESCATTER, dt, op, 0, 0, s, r, count }, "ncclReduceScatter");
}
EXPORT int ncclBroadcast(const void *s, void *r, size_t count, int dt, int root, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ BROADCAST, dt, 0, root, 0, s, r, count }, "ncclBroadcast");
}
EXPORT int ncclReduce(const void *s, void *r, size_t count, int dt, int op, int root, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ REDUCE, dt, op, root, 0, s, r, count }, "ncclReduce");
}
EXPORT int ncclSend(const void *s, size_t count, int dt, int peer, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ SEND, dt, 0, 0, peer, s, NULL, count }, "ncclSend");
}
EXPORT int ncclRecv(void *r, size_t count, int dt, int peer, void *comm, void *stream) {
  return submit(comm, stream, (op_t){ RECV, dt, 0, 0, peer, NULL, r, count }, "ncclRecv");
}
