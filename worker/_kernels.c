/* The tracer's reductions on a CPU: one pass over memory, and few calls from Python.
 *
 * A traced step reduces every weight, weight gradient, pre-activation gradient and
 * activation of the network: many small float32 tensors. PyTorch does that with one
 * kernel call (or more) per tensor and per statistic, each a separate pass over
 * memory; on a CPU that costs several times the reductions themselves. These
 * functions take the tensors as raw addresses (`Tensor.data_ptr()`, contiguous
 * float32, checked by the caller, worker/stats.py) and run with the GIL released.
 *
 *   sumsq(addresses, sizes, out)
 *       out[i] = sum of squares of tensor i.   (lists of ints, or uint64 / int64 buffers -> float64 buffer)
 *   sumsq_one(address, n) -> float
 *       the same for one tensor.
 *   activation_stats(out, outputs, saturation_inputs, outer, units, inner, low0, high0, low1, high1)
 *       per hidden block b (outputs[b] viewed as outer x units x inner; addresses as for sumsq):
 *       out[b] = mean, std, share of dead units, share of saturated values.  (float64 blocks x 4)
 *   block_stats(out, row, output, saturation_input, outer, units, inner, low0, high0, low1, high1)
 *       the same for one block given by its addresses, into out[row].
 *   fill_row(row, sums, sum_columns, values, value_columns)
 *       a trace row from the sums: row[c] = sqrt(sum of the sums[i] with c in sum_columns[i]) (two columns
 *       per sum, -1 for none), then row[value_columns[j]] = values[j].   (float32 row, float64, int64 buffers)
 *   update_ratio(row, updates, weights, ratios, count, scale)
 *       row[ratios + i] = (row[updates + i] * scale) / row[weights + i] for i < count, in float32 with IEEE
 *       division (x / 0 is inf, 0 / 0 NaN): plain SGD's ||dW|| / ||W|| from the gradient norms.
 *   run(program)
 *       reductions listed in an int64 buffer, each writing where it says (addresses, like those of the
 *       tensors): records of SUMSQ, out, address, n (a sum of squares into the float64 at out) and
 *       BLOCK, out, output, saturation_input, outer, units, inner, limits (block_stats into 4 float64 at
 *       out; limits: the address of 4 float64). A program is planned once and run every traced step, by
 *       worker.engine after each layer's backward, while that layer's tensors are in cache.
 *   accuracy(logits, targets, rows, classes) -> int
 *       how many rows of the float32 logits have their largest value (the first one; NaN counts as
 *       largest, as in torch.argmax) at the int64 target's index.
 *   lstm_forward(gates, bias, g, c_prev, c, tanh_c, h, batch, width)
 *   lstm_backward(dh, tanh_c, gates, g, c_prev, dc, dgates, batch, width)
 *       one time step of an LSTM layer's elementwise forward and backward, for worker.engine (the two
 *       kernels here that are not the tracer's: the dozen PyTorch calls of a time step cost more than
 *       their arithmetic). The forward's sigmoid and tanh are Cephes' float32 ones, inline so that the
 *       loop vectorizes (hence -fno-math-errno and -fno-trapping-math in pyproject.toml); it adds the
 *       gates' bias (b_ih + b_hh) as it reads them.
 *   use_threads(GOMP_parallel, omp_get_max_threads, omp_get_thread_num, omp_get_num_threads)
 *       the addresses of PyTorch's OpenMP runtime (or four zeros): sums of squares and block statistics
 *       of at least 65,536 values, and LSTM time steps of at least 2,048, are then split over PyTorch's
 *       threads (see team_run).
 *
 * fill_row, update_ratio and accuracy exist for their few microseconds: right after backward, the
 * code of the dozen numpy calls they replace is out of the core's caches, and each
 * such call costs 10-20 us there, against 1 us in a loop that repeats it.
 *
 * Sums of squares reach float64: squares of gradients below ~1e-19, which float32
 * loses, still count, and so do squares beyond float32's range (see sum_squares). A unit is dead when no value of it is > 0 (NaN counts
 * as alive, as in the PyTorch path); a value is saturated when the tensor at
 * `saturation_input` (the outputs themselves, or the activation's inputs) has it in
 * [low0, high0] or [low1, high1] (an unused interval: [inf, -inf]). The mean and the
 * population std come from sums of x - x[0] (the block's first value): in runs of
 * CHUNK values in float32, which lose nothing that matters once shifted, added up in
 * float64; the shift keeps the near-constant outputs of saturated units exact.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* AVX-512 (x86-64-v4) or AVX2 and FMA (x86-64-v3) where the CPU has them (chosen when the module loads), plain
 * SSE2 elsewhere. Both wide versions fuse the same multiply-adds, so they give the same results; AVX-512 took an
 * LSTM forward step from 17 to 11 us here (fewer instructions for its sigmoid and tanh). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FAST __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FAST
#endif

/* Sums run in LANES independent accumulators: the vector units then never wait on one chain of additions. */
#define LANES 16

/* The sum of squares in float64 throughout: exact enough for any float32 input, at the cost of a conversion
 * per value (on AVX2 that conversion, not memory, bounds the speed: about 4 values per cycle). */
FAST static double sum_squares_double(const float *x, int64_t n) {
    double lane[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double v = x[i + j];
            lane[j] += v * v;
        }
    double total = 0.0;
    for (; i < n; i++) total += (double)x[i] * x[i];
    for (int j = 0; j < LANES; j++) total += lane[j];
    return total;
}

/* Values whose squares are summed in float32 before the sum joins the float64 total. */
#define SQUARES_CHUNK 1024
#define SQUARES_LANES 32
/* A chunk whose float32 sum falls below this may have lost squares below float32's range (about 1e-38):
 * it is summed again in float64. Above it, what such squares could add is below 1e-16 of the sum. */
#define SQUARES_LOW 0x1p-60

/* The sum of squares in float64, at float32's speed: chunks of SQUARES_CHUNK values are summed in float32
 * (32 lanes of 32 squares each: a relative error of at most 2e-6, typically 1e-7, the precision of the
 * float32 norm that the trace stores), and a chunk whose float32 sum underflowed, overflowed or is not a
 * number is summed again in float64. So a gradient of 1e-25 per value, or 1e30, still reads its true norm. */
FAST static double sum_squares(const float *x, int64_t n) {
    double total = 0.0;
    int64_t start = 0;
    for (; start + SQUARES_CHUNK <= n; start += SQUARES_CHUNK) {
        const float *chunk = x + start;
        float lane[SQUARES_LANES] = {0};
        for (int i = 0; i < SQUARES_CHUNK; i += SQUARES_LANES)
            for (int j = 0; j < SQUARES_LANES; j++) lane[j] += chunk[i + j] * chunk[i + j];
        double sum = 0.0;
        for (int j = 0; j < SQUARES_LANES; j++) sum += lane[j];
        if (!(sum >= SQUARES_LOW && sum <= FLT_MAX)) sum = sum_squares_double(chunk, SQUARES_CHUNK);
        total += sum;
    }
    return total + sum_squares_double(x + start, n - start);
}

/* Large reductions split over PyTorch's own OpenMP threads.
 *
 * With two or more torch threads, the layers' kernels write each half of a large tensor
 * from another core; read back by one thread, half of it crosses between the cores'
 * caches, and the layer after the reduction reads it back across again. Where PyTorch runs
 * on GNU OpenMP (its CPU builds on Linux), worker/stats.py hands over that runtime's entry
 * points (`use_threads`) and a reduction of at least 2 * TEAM_MIN_VALUES values runs as a
 * parallel region of PyTorch's own team, whose threads are already waiting for the next
 * kernel: each reduces a contiguous share, as ATen's loops split a tensor, and the shares'
 * float64 sums are added in order. Without those entry points everything runs on the
 * calling thread. */
typedef void (*GompParallel)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*OmpQuery)(void);
static GompParallel team_parallel;
static OmpQuery team_max_threads, team_thread_num, team_num_threads;
#define TEAM_MAX 64
/* Values per thread below which a split costs more than it saves (ATen's grain size). */
#define TEAM_MIN_VALUES (1 << 15)

typedef struct {
    void (*part)(void *, int, int);
    void *context;
    int parts;
} TeamJob;

static void team_body(void *arg) {
    TeamJob *job = arg;
    int parts = team_num_threads(), part = team_thread_num();
    if (part == 0) job->parts = parts;
    job->part(job->context, part, parts);
}

/* How many threads a job of `values` values gets, each at least `per_thread` of them: 1 without a team or when
 * it is small. */
static int team_size(int64_t values, int64_t per_thread) {
    if (!team_parallel) return 1;
    int64_t threads = team_max_threads(), most = values / per_thread;
    if (threads > most) threads = most;
    return threads < 1 ? 1 : threads > TEAM_MAX ? TEAM_MAX : (int)threads;
}

/* part(context, p, parts) for every p < parts on `threads` threads of the team; returns parts (the team may
 * be smaller than asked, as inside another parallel region). */
static int team_run(void (*part)(void *, int, int), void *context, int threads) {
    if (threads <= 1) {
        part(context, 0, 1);
        return 1;
    }
    TeamJob job = {part, context, 1};
    team_parallel(team_body, &job, (unsigned)threads, 0);
    return job.parts;
}

/* The share [start, end) of n items that part p of parts takes, in whole multiples of `unit` but for the last. */
static void share(int64_t n, int64_t unit, int p, int parts, int64_t *start, int64_t *end) {
    int64_t units = n / unit;
    *start = units * p / parts * unit;
    *end = p == parts - 1 ? n : units * (p + 1) / parts * unit;
}

typedef struct {
    const float *x;
    int64_t n;
    double sums[TEAM_MAX];
} SquaresJob;

static void squares_part(void *context, int p, int parts) {
    SquaresJob *job = context;
    int64_t start, end;
    share(job->n, SQUARES_CHUNK, p, parts, &start, &end);
    job->sums[p] = sum_squares(job->x + start, end - start);
}

/* sum_squares, split over the team when large. */
static double sum_squares_shared(const float *x, int64_t n) {
    int threads = team_size(n, TEAM_MIN_VALUES);
    if (threads <= 1) return sum_squares(x, n);
    SquaresJob job = {x, n, {0}};
    int parts = team_run(squares_part, &job, threads);
    double total = 0.0;
    for (int p = 0; p < parts; p++) total += job.sums[p];
    return total;
}

/* What a pass over part of a block adds up: float64 sums of x - shift, and saturated values. */
typedef struct {
    double sum, sum_sq;
    int64_t saturated;
} Sums;

/* Whether v lies in one of two closed intervals (an empty one is [inf, -inf]). */
#define SATURATED(v, lim) ((((v) >= (lim)[0]) & ((v) <= (lim)[1])) | (((v) >= (lim)[2]) & ((v) <= (lim)[3])))

/* Values summed in float32 before they join the float64 sums: short enough that float32 loses nothing that matters. */
#define CHUNK 2048

/* Independent float32 accumulators per sum in sums_of_run: enough to keep the vector units busy, few enough
 * to stay in registers. */
#define RUN_LANES 16

/* The saturation test of sums_of_run, by the shape of the intervals: most activations need one comparison
 * (ReLU: v <= 0) or two (tanh, sigmoid: v <= a or v >= b), not the general test's four. */
enum { NEVER, AT_MOST, AT_LEAST, OUTSIDE, INTERVALS };

static int saturation_kind(const float *lim) {
    int first = lim[0] <= lim[1], second = lim[2] <= lim[3];
    if (!first && !second) return NEVER;
    if (first && !second && lim[0] == -INFINITY) return AT_MOST; /* v <= lim[1] */
    if (first && !second && lim[1] == INFINITY) return AT_LEAST; /* v >= lim[0] */
    if (first && second && lim[0] == -INFINITY && lim[3] == INFINITY) return OUTSIDE; /* v <= lim[1] or v >= lim[2] */
    return INTERVALS;
}

/* One run's loop for one kind of saturation test TEST(value, lim). */
#define SUMS_OF_RUN(name, TEST)                                                                                \
    FAST static void name(const float *x, const float *sat, int64_t n, float shift, const float *lim, Sums *sums) { \
        for (int64_t start = 0; start < n; start += CHUNK) {                                                    \
            int64_t end = n - start < CHUNK ? n : start + CHUNK, i = start;                                     \
            float s[RUN_LANES] = {0}, s2[RUN_LANES] = {0};                                                      \
            int32_t count[RUN_LANES] = {0};                                                                     \
            for (; i + RUN_LANES <= end; i += RUN_LANES)                                                        \
                for (int j = 0; j < RUN_LANES; j++) {                                                           \
                    float v = x[i + j] - shift;                                                                 \
                    s[j] += v;                                                                                  \
                    s2[j] += v * v;                                                                             \
                    count[j] += TEST(sat[i + j], lim);                                                          \
                }                                                                                               \
            for (; i < end; i++) {                                                                              \
                float v = x[i] - shift;                                                                         \
                s[0] += v;                                                                                      \
                s2[0] += v * v;                                                                                 \
                count[0] += TEST(sat[i], lim);                                                                  \
            }                                                                                                   \
            for (int j = 0; j < RUN_LANES; j++) {                                                               \
                sums->sum += s[j];                                                                              \
                sums->sum_sq += s2[j];                                                                          \
                sums->saturated += count[j];                                                                    \
            }                                                                                                   \
        }                                                                                                       \
    }

#define TEST_NEVER(v, lim) 0
#define TEST_AT_MOST(v, lim) ((v) <= (lim)[1])
#define TEST_AT_LEAST(v, lim) ((v) >= (lim)[0])
#define TEST_OUTSIDE(v, lim) (((v) <= (lim)[1]) | ((v) >= (lim)[2]))
SUMS_OF_RUN(sums_never, TEST_NEVER)
SUMS_OF_RUN(sums_at_most, TEST_AT_MOST)
SUMS_OF_RUN(sums_at_least, TEST_AT_LEAST)
SUMS_OF_RUN(sums_outside, TEST_OUTSIDE)
SUMS_OF_RUN(sums_intervals, SATURATED)

/* Sums of x - shift over n values, and how many of sat lie in the saturated intervals. */
static void sums_of_run(const float *x, const float *sat, int64_t n, float shift, const float *lim, Sums *sums) {
    switch (saturation_kind(lim)) {
    case NEVER: sums_never(x, sat, n, shift, lim, sums); break;
    case AT_MOST: sums_at_most(x, sat, n, shift, lim, sums); break;
    case AT_LEAST: sums_at_least(x, sat, n, shift, lim, sums); break;
    case OUTSIDE: sums_outside(x, sat, n, shift, lim, sums); break;
    default: sums_intervals(x, sat, n, shift, lim, sums);
    }
}

/* Whether every unit has a value > 0 (or NaN) in the rows of x (rows x units); alive[u] says which do.
 * A unit is alive from its first such value on, and most units of a live network are alive within a few
 * rows: the scan stops once all are. */
FAST static int32_t mark_alive_units(const float *x, int64_t rows, int64_t units, int32_t *alive) {
    for (int64_t r = 0; r < rows; r++, x += units) {
        int32_t all = 1;
#pragma omp simd reduction(& : all)
        for (int64_t u = 0; u < units; u++) {
            alive[u] |= !(x[u] <= 0.0f);
            all &= alive[u];
        }
        if (all) return 1;
    }
    return 0;
}

/* Whether some value of x is not <= 0. */
FAST static int32_t any_alive(const float *x, int64_t n) {
    int32_t alive = 0;
#pragma omp simd reduction(| : alive)
    for (int64_t i = 0; i < n; i++) alive |= !(x[i] <= 0.0f);
    return alive;
}

static int get_buffer(PyObject *object, Py_buffer *view, int writable, Py_ssize_t item, const char *what) {
    if (PyObject_GetBuffer(object, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != item || view->len % item) {
        PyErr_Format(PyExc_ValueError, "%s: expected items of %zd bytes", what, item);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A sequence of n ints (a list or tuple) or a buffer of n 8-byte integers, as a new C array; NULL on error. */
static int64_t *int64_array(PyObject *object, Py_ssize_t *n, const char *what) {
    if (PyList_Check(object) || PyTuple_Check(object)) {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(object);
        int64_t *array = PyMem_Malloc(sizeof(int64_t) * (count ? count : 1));
        if (!array) return (int64_t *)PyErr_NoMemory();
        PyObject **items = PySequence_Fast_ITEMS(object);
        for (Py_ssize_t i = 0; i < count; i++) {
            array[i] = (int64_t)PyLong_AsUnsignedLongLongMask(items[i]);
            if (array[i] == -1 && PyErr_Occurred()) {
                PyMem_Free(array);
                return NULL;
            }
        }
        *n = count;
        return array;
    }
    Py_buffer view;
    if (get_buffer(object, &view, 0, 8, what) < 0) return NULL;
    int64_t *array = PyMem_Malloc(view.len ? view.len : 1);
    if (array) memcpy(array, view.buf, view.len);
    *n = view.len / 8;
    PyBuffer_Release(&view);
    return array ? array : (int64_t *)PyErr_NoMemory();
}

static PyObject *sumsq(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *addresses_obj, *sizes_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &addresses_obj, &sizes_obj, &out_obj)) return NULL;
    Py_ssize_t n, sizes_n;
    int64_t *address = int64_array(addresses_obj, &n, "addresses"), *size = NULL;
    if (!address) return NULL;
    if (!(size = int64_array(sizes_obj, &sizes_n, "sizes"))) goto fail;
    Py_buffer out;
    if (get_buffer(out_obj, &out, 1, 8, "out") < 0) goto fail;
    if (sizes_n != n || out.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "addresses, sizes and out differ in length");
        PyBuffer_Release(&out);
        goto fail;
    }
    double *result = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) result[i] = sum_squares_shared((const float *)(uintptr_t)address[i], size[i]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyMem_Free(size);
    PyMem_Free(address);
    Py_RETURN_NONE;
fail:
    PyMem_Free(size);
    PyMem_Free(address);
    return NULL;
}

typedef struct {
    int64_t outer, units, inner;
    float limits[4]; /* up to two saturated intervals, as float32: low, high, low, high */
    int32_t *alive;  /* scratch: one flag per unit */
} BlockShape;

/* Sums and live units of rows [start, end) of a block (rows: its outer dimension); alive[u] is set for the
 * units with a value > 0 there. */
static void block_rows(const float *x, const float *sat, const BlockShape *shape, float shift, int64_t start,
                       int64_t end, Sums *sums, int32_t *alive) {
    int64_t units = shape->units, inner = shape->inner, size = units * inner;
    x += start * size;
    sums_of_run(x, sat + start * size, (end - start) * size, shift, shape->limits, sums);
    memset(alive, 0, sizeof(int32_t) * units);
    if (inner == 1) {
        mark_alive_units(x, end - start, units, alive);
    } else {
        for (int64_t o = 0; o < end - start; o++)
            for (int64_t u = 0; u < units; u++)
                if (!alive[u]) alive[u] = any_alive(x + (o * units + u) * inner, inner);
    }
}

typedef struct {
    const float *x, *sat;
    const BlockShape *shape;
    float shift;
    Sums sums[TEAM_MAX];
    int32_t *alive; /* units flags per part */
} BlockJob;

static void block_part(void *context, int p, int parts) {
    BlockJob *job = context;
    int64_t start, end;
    share(job->shape->outer, 1, p, parts, &start, &end);
    job->sums[p] = (Sums){0.0, 0.0, 0};
    block_rows(job->x, job->sat, job->shape, job->shift, start, end, &job->sums[p], job->alive + p * job->shape->units);
}

static void block_stats(const float *x, const float *sat, const BlockShape *shape, double *out) {
    int64_t outer = shape->outer, units = shape->units, inner = shape->inner, n = outer * units * inner;
    int threads = team_size(n, TEAM_MIN_VALUES);
    if (threads > outer) threads = (int)outer;
    /* Split, each part marks its live units in a scratch of its own (on failure to get one: not split). */
    int32_t *scratch = threads > 1 ? malloc(sizeof(int32_t) * units * threads) : NULL;
    BlockJob job = {x, sat, shape, x[0], {{0.0, 0.0, 0}}, scratch ? scratch : shape->alive};
    int parts = team_run(block_part, &job, scratch ? threads : 1);
    Sums sums = {0.0, 0.0, 0};
    int64_t dead = 0;
    for (int p = 0; p < parts; p++) {
        sums.sum += job.sums[p].sum;
        sums.sum_sq += job.sums[p].sum_sq;
        sums.saturated += job.sums[p].saturated;
    }
    for (int64_t u = 0; u < units; u++) {
        int32_t alive = 0;
        for (int p = 0; p < parts; p++) alive |= job.alive[p * units + u];
        dead += !alive;
    }
    free(scratch);
    float shift = job.shift;
    double mean_shifted = sums.sum / n;
    double variance = sums.sum_sq / n - mean_shifted * mean_shifted;
    out[0] = shift + mean_shifted;
    out[1] = sqrt(variance > 0.0 ? variance : 0.0);
    out[2] = (double)dead / units;
    out[3] = (double)sums.saturated / n;
}

static PyObject *sumsq_one(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long address;
    long long n;
    if (!PyArg_ParseTuple(args, "KL", &address, &n)) return NULL;
    double total;
    Py_BEGIN_ALLOW_THREADS
    total = sum_squares_shared((const float *)(uintptr_t)address, n);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(total);
}

#define STACK_UNITS 4096

/* block_stats of `blocks` blocks at outputs[b] (saturation tested at saturation[b]) into out[row + b]. */
static PyObject *run_blocks(PyObject *out_obj, Py_ssize_t row, const uint64_t *outputs, const uint64_t *saturation,
                            Py_ssize_t blocks, long long outer, long long units, long long inner, const double *bound) {
    if (outer < 1 || units < 1 || inner < 1) {
        PyErr_SetString(PyExc_ValueError, "outer, units and inner must be >= 1");
        return NULL;
    }
    Py_buffer out;
    if (get_buffer(out_obj, &out, 1, 8, "out") < 0) return NULL;
    if (row < 0 || 4 * (row + blocks) > out.len / 8) {
        PyErr_SetString(PyExc_IndexError, "activation_stats: more rows than out has");
        PyBuffer_Release(&out);
        return NULL;
    }
    int32_t stack_alive[STACK_UNITS];
    int32_t *alive = units <= STACK_UNITS ? stack_alive : PyMem_Malloc(sizeof(int32_t) * units);
    if (!alive) {
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    /* Rounded to the nearest float32, as PyTorch rounds a Python number compared with a float32 tensor. */
    BlockShape shape = {outer, units, inner, {(float)bound[0], (float)bound[1], (float)bound[2], (float)bound[3]}, alive};
    double *stats = (double *)out.buf + 4 * row;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < blocks; b++)
        block_stats((const float *)(uintptr_t)outputs[b], (const float *)(uintptr_t)saturation[b], &shape, stats + 4 * b);
    Py_END_ALLOW_THREADS
    if (alive != stack_alive) PyMem_Free(alive);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyObject *block_stats_one(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *out;
    Py_ssize_t row;
    unsigned long long output, saturation;
    long long outer, units, inner;
    double bound[4];
    if (!PyArg_ParseTuple(args, "OnKKLLLdddd", &out, &row, &output, &saturation, &outer, &units, &inner, &bound[0],
                          &bound[1], &bound[2], &bound[3]))
        return NULL;
    uint64_t output_address = output, saturation_address = saturation;
    return run_blocks(out, row, &output_address, &saturation_address, 1, outer, units, inner, bound);
}

static PyObject *activation_stats(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *out, *outputs_obj, *saturation_obj;
    long long outer, units, inner;
    double bound[4];
    if (!PyArg_ParseTuple(args, "OOOLLLdddd", &out, &outputs_obj, &saturation_obj, &outer, &units, &inner, &bound[0],
                          &bound[1], &bound[2], &bound[3]))
        return NULL;
    Py_ssize_t blocks, tested;
    int64_t *outputs = int64_array(outputs_obj, &blocks, "outputs"), *saturation = NULL;
    if (!outputs) return NULL;
    PyObject *result = NULL;
    saturation = int64_array(saturation_obj, &tested, "saturation");
    if (saturation && tested != blocks)
        PyErr_SetString(PyExc_ValueError, "activation_stats: as many saturation inputs as outputs");
    else if (saturation)
        result = run_blocks(out, 0, (const uint64_t *)outputs, (const uint64_t *)saturation, blocks, outer, units,
                            inner, bound);
    PyMem_Free(saturation);
    PyMem_Free(outputs);
    return result;
}

/* sqrt of a float64 sum of squares as float32: inf beyond float32's range, as PyTorch's norms give. */
static float norm_of(double squares) {
    double norm = sqrt(squares);
    return norm > FLT_MAX ? INFINITY : (float)norm;
}

static PyObject *fill_row(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *objects[5];
    if (!PyArg_ParseTuple(args, "OOOOO", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4])) return NULL;
    static const char *names[5] = {"row", "sums", "sum_columns", "values", "value_columns"};
    static const Py_ssize_t items[5] = {4, 8, 8, 8, 8};
    Py_buffer views[5];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 5; got++)
        if (get_buffer(objects[got], &views[got], got == 0, items[got], names[got]) < 0) goto done;
    Py_ssize_t width = views[0].len / 4, sums = views[1].len / 8, values = views[3].len / 8;
    const int64_t *sum_columns = views[2].buf, *value_columns = views[4].buf;
    if (views[2].len / 8 != 2 * sums || views[4].len / 8 != values) {
        PyErr_SetString(PyExc_ValueError, "fill_row: two columns per sum and one per value");
        goto done;
    }
    for (Py_ssize_t i = 0; i < 2 * sums; i++)
        if (sum_columns[i] < -1 || sum_columns[i] >= width) {
            PyErr_SetString(PyExc_IndexError, "fill_row: a sum's column is outside the row");
            goto done;
        }
    for (Py_ssize_t j = 0; j < values; j++)
        if (value_columns[j] < 0 || value_columns[j] >= width) {
            PyErr_SetString(PyExc_IndexError, "fill_row: a value's column is outside the row");
            goto done;
        }
    double *total = PyMem_Calloc(width ? width : 1, sizeof(double));
    char *used = PyMem_Calloc(width ? width : 1, 1);
    if (!total || !used) {
        PyMem_Free(total);
        PyMem_Free(used);
        PyErr_NoMemory();
        goto done;
    }
    const double *sum = views[1].buf, *value = views[3].buf;
    float *row = views[0].buf;
    for (Py_ssize_t i = 0; i < 2 * sums; i++)
        if (sum_columns[i] >= 0) {
            total[sum_columns[i]] += sum[i / 2];
            used[sum_columns[i]] = 1;
        }
    for (Py_ssize_t c = 0; c < width; c++)
        if (used[c]) row[c] = norm_of(total[c]);
    /* Values are within float32's range (means, stds and shares of float32 values). */
    for (Py_ssize_t j = 0; j < values; j++) row[value_columns[j]] = (float)value[j];
    PyMem_Free(total);
    PyMem_Free(used);
    result = Py_None;
    Py_INCREF(result);
done:
    while (got-- > 0) PyBuffer_Release(&views[got]);
    return result;
}

enum { SUMSQ = 0, BLOCK = 1 };

static PyObject *run(PyObject *Py_UNUSED(self), PyObject *program_obj) {
    Py_buffer view;
    if (get_buffer(program_obj, &view, 0, 8, "program") < 0) return NULL;
    const int64_t *op = view.buf, *end = op + view.len / 8;
    /* Checked before anything runs: a record cut short, an unknown kind or an empty block runs nothing. */
    int64_t most_units = 0;
    for (const int64_t *at = op; at < end;) {
        int64_t length = at[0] == SUMSQ ? 4 : at[0] == BLOCK ? 8 : 0;
        if (!length || end - at < length || (at[0] == BLOCK && (at[4] < 1 || at[5] < 1 || at[6] < 1))) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "run: a malformed program");
            return NULL;
        }
        if (at[0] == BLOCK && at[5] > most_units) most_units = at[5];
        at += length;
    }
    int32_t stack_alive[STACK_UNITS];
    int32_t *alive = most_units <= STACK_UNITS ? stack_alive : PyMem_Malloc(sizeof(int32_t) * most_units);
    if (!alive) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    while (op < end) {
        if (op[0] == SUMSQ) {
            *(double *)(uintptr_t)op[1] = sum_squares_shared((const float *)(uintptr_t)op[2], op[3]);
            op += 4;
            continue;
        }
        const double *bound = (const double *)(uintptr_t)op[7];
        /* Rounded to the nearest float32, as in run_blocks. */
        BlockShape shape = {op[4], op[5], op[6], {(float)bound[0], (float)bound[1], (float)bound[2], (float)bound[3]},
                            alive};
        block_stats((const float *)(uintptr_t)op[2], (const float *)(uintptr_t)op[3], &shape, (double *)(uintptr_t)op[1]);
        op += 8;
    }
    Py_END_ALLOW_THREADS
    if (alive != stack_alive) PyMem_Free(alive);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *update_ratio(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *row_obj;
    Py_ssize_t updates, weights, ratios, count;
    double scale;
    if (!PyArg_ParseTuple(args, "Onnnnd", &row_obj, &updates, &weights, &ratios, &count, &scale)) return NULL;
    Py_buffer view;
    if (get_buffer(row_obj, &view, 1, 4, "row") < 0) return NULL;
    Py_ssize_t width = view.len / 4;
    if (count < 0 || updates < 0 || weights < 0 || ratios < 0 || updates + count > width || weights + count > width ||
        ratios + count > width) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_IndexError, "update_ratio: columns outside the row");
        return NULL;
    }
    /* In float32, as numpy computes (row * scale) / row on the path that this call replaces. */
    float *row = view.buf, factor = (float)scale;
    for (Py_ssize_t i = 0; i < count; i++) {
        float update = row[updates + i] * factor;
        row[ratios + i] = update / row[weights + i];
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* exp(x) in float32, as Cephes' expf computes it: a degree-6 polynomial after reduction by multiples of ln 2
 * (about 1 ulp); inline, so that the loops that call it vectorize. */
static inline float exp_approx(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447504f ? -87.3365447504f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/* tanh(x) as Cephes' tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above. */
static inline float tanh_approx(float x) {
    float a = fabsf(x), z = x * x;
    float large = 1.0f - 2.0f / (exp_approx(2.0f * a) + 1.0f);
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) *
                   z - 3.33332819422e-1f) * z * x + x;
    return a < 0.625f ? small : (x < 0.0f ? -large : large);
}

/* One time step of an LSTM layer's forward after the matrix products: gates (batch x 4*width: the pre-activations
 * i, f, g, o, but for the bias, 4*width, added here so that no pass over the whole sequence's gates writes it
 * beforehand) get sigmoid(i), sigmoid(f), sigmoid(o) in place, g = tanh of the g slot, c = f c_prev + i g,
 * tanh_c = tanh(c), h = o tanh_c. Within 2e-7 of PyTorch's sigmoid and tanh (relative), not bit for bit. */
FAST static void lstm_step_forward(float *gates, const float *bias, float *g, const float *c_prev, float *c,
                                   float *tanh_c, float *h, int64_t batch, int64_t width) {
    const float *bi = bias, *bf = bias + width, *bg = bias + 2 * width, *bo = bias + 3 * width;
    for (int64_t b = 0; b < batch; b++) {
        float *i = gates + 4 * width * b, *f = i + width, *g_pre = i + 2 * width, *o = i + 3 * width;
        int64_t row = width * b;
#pragma omp simd
        for (int64_t k = 0; k < width; k++) {
            float ik = sigmoid_approx(i[k] + bi[k]), fk = sigmoid_approx(f[k] + bf[k]);
            float ok = sigmoid_approx(o[k] + bo[k]);
            float gk = tanh_approx(g_pre[k] + bg[k]);
            i[k] = ik;
            f[k] = fk;
            o[k] = ok;
            g[row + k] = gk;
            float ck = fk * c_prev[row + k] + ik * gk;
            float tk = tanh_approx(ck);
            c[row + k] = ck;
            tanh_c[row + k] = tk;
            h[row + k] = ok * tk;
        }
    }
}

/* One time step of an LSTM layer's backward (worker.engine's RecurrentEngine): the ten elementwise PyTorch calls
 * of a step in one pass, with their formulas (tanh' as 1 - y*y, sigmoid' as (1 - y)*y, in the same order). Every
 * array is float32, contiguous, batch x width, but for the gates (their sigmoid outputs i, f, o and the g slot)
 * and their gradients, batch x 4*width in the order i, f, g, o. dc holds dLoss/dc_t on entry (the part through
 * c_{t+1}) and dLoss/dc_{t-1} on return. */
FAST static void lstm_step_backward(const float *dh, const float *tc, const float *gates, const float *g,
                                    const float *c_prev, float *dc, float *dgates, int64_t batch, int64_t width) {
    for (int64_t b = 0; b < batch; b++) {
        const float *i = gates + 4 * width * b, *f = i + width, *o = i + 3 * width;
        float *di = dgates + 4 * width * b, *df = di + width, *dg = di + 2 * width, *d_o = di + 3 * width;
        const float *dh_b = dh + width * b, *tc_b = tc + width * b, *g_b = g + width * b, *c_b = c_prev + width * b;
        float *dc_b = dc + width * b;
        for (int64_t k = 0; k < width; k++) {
            float through_o = dh_b[k] * tc_b[k];
            float through_c = dh_b[k] * o[k];
            through_c = through_c * (1.0f - tc_b[k] * tc_b[k]);
            float dct = dc_b[k] + through_c;
            float to_i = dct * g_b[k], to_f = dct * c_b[k], to_g = dct * i[k];
            dc_b[k] = dct * f[k];
            di[k] = to_i * (1.0f - i[k]) * i[k];
            df[k] = to_f * (1.0f - f[k]) * f[k];
            d_o[k] = through_o * (1.0f - o[k]) * o[k];
            dg[k] = to_g * (1.0f - g_b[k] * g_b[k]);
        }
    }
}

/* The LSTM's steps split over the team by rows of the batch (each row's values are its own: the result is the
 * same however it is split), where each thread gets at least LSTM_MIN_VALUES values: an LSTM value costs about
 * 16 times a reduced one, and 64 x 64 values took 17 us (forward) on one core against a few for the split. */
#define LSTM_MIN_VALUES 1024

/* The team for an LSTM step of batch x width values: whole rows each. */
static int lstm_team_size(int64_t batch, int64_t width) {
    int threads = team_size(batch * width, LSTM_MIN_VALUES);
    return threads > batch && batch > 0 ? (int)batch : threads;
}

/* What an LSTM kernel works on, by address: one time step's slices (lstm_forward, lstm_backward: c_prev and c),
 * or a layer's whole sequence (lstm_sequence_*: c and h of steps + 1 slices, steps, the weight w_hh). */
typedef struct {
    float *gates, *g, *c, *tanh_c, *h, *dh, *dc, *dgates;
    const float *bias, *c_prev, *w_hh;
    int64_t steps, batch, width;
} LstmJob;

static void lstm_forward_part(void *context, int p, int parts) {
    LstmJob *job = context;
    int64_t start, end, w = job->width;
    share(job->batch, 1, p, parts, &start, &end);
    lstm_step_forward(job->gates + 4 * w * start, job->bias, job->g + w * start, job->c_prev + w * start,
                      job->c + w * start, job->tanh_c + w * start, job->h + w * start, end - start, w);
}

static void lstm_backward_part(void *context, int p, int parts) {
    LstmJob *job = context;
    int64_t start, end, w = job->width;
    share(job->batch, 1, p, parts, &start, &end);
    lstm_step_backward(job->dh + w * start, job->tanh_c + w * start, job->gates + 4 * w * start, job->g + w * start,
                       job->c_prev + w * start, job->dc + w * start, job->dgates + 4 * w * start, end - start, w);
}

static PyObject *lstm_forward(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long gates, bias, g, c_prev, c, tanh_c, h;
    long long batch, width;
    if (!PyArg_ParseTuple(args, "KKKKKKKLL", &gates, &bias, &g, &c_prev, &c, &tanh_c, &h, &batch, &width))
        return NULL;
    if (batch < 0 || width < 0) {
        PyErr_SetString(PyExc_ValueError, "lstm_forward: batch and width must be >= 0");
        return NULL;
    }
    LstmJob job = {.gates = (float *)(uintptr_t)gates, .bias = (const float *)(uintptr_t)bias,
                   .g = (float *)(uintptr_t)g, .c = (float *)(uintptr_t)c, .tanh_c = (float *)(uintptr_t)tanh_c,
                   .h = (float *)(uintptr_t)h, .c_prev = (const float *)(uintptr_t)c_prev, .batch = batch,
                   .width = width};
    team_run(lstm_forward_part, &job, lstm_team_size(batch, width));
    Py_RETURN_NONE;
}

static PyObject *lstm_backward(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long dh, tc, gates, g, c_prev, dc, dgates;
    long long batch, width;
    if (!PyArg_ParseTuple(args, "KKKKKKKLL", &dh, &tc, &gates, &g, &c_prev, &dc, &dgates, &batch, &width)) return NULL;
    if (batch < 0 || width < 0) {
        PyErr_SetString(PyExc_ValueError, "lstm_backward: batch and width must be >= 0");
        return NULL;
    }
    LstmJob job = {.dh = (float *)(uintptr_t)dh, .tanh_c = (float *)(uintptr_t)tc,
                   .gates = (float *)(uintptr_t)gates, .g = (float *)(uintptr_t)g,
                   .c_prev = (const float *)(uintptr_t)c_prev, .dc = (float *)(uintptr_t)dc,
                   .dgates = (float *)(uintptr_t)dgates, .batch = batch, .width = width};
    team_run(lstm_backward_part, &job, lstm_team_size(batch, width));
    Py_RETURN_NONE;
}

/* A whole LSTM layer's recurrence in one call: the matrix product of every time step by the sgemm of the BLAS
 * PyTorch links (MKL's, found by worker/stats.py: `use_blas`), then the step's elementwise kernel. The rows of a
 * batch never meet in a recurrence (the weights are shared, and only read), so each thread of the team takes
 * its rows through every time step on its own: no barrier between time steps, where the step-by-step calls
 * from Python had two per step (the product's parallel region, then the kernel's). Inside the team's parallel
 * region MKL runs each product on the calling thread. */
typedef void (*Sgemm)(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                      const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
                      const float *beta, float *c, const int *ldc);
static Sgemm blas_sgemm;

/* out (rows x 4*width, row-major) += h (rows x width) W^T, W the row-major 4*width x width weight_hh. In BLAS's
 * column-major terms: out^T += W h^T, W read transposed from its column-major (width x 4*width) storage. */
static void gates_from_h(const float *h, const float *w_hh, float *out, int rows, int width) {
    int m = 4 * width, n = rows, k = width, lda = width, ldb = width, ldc = 4 * width;
    float one = 1.0f;
    blas_sgemm("T", "N", &m, &n, &k, &one, w_hh, &lda, h, &ldb, &one, out, &ldc);
}

/* dh (rows x width) += da (rows x 4*width) W: in column-major terms dh^T += W^T da^T, W^T being W's storage. */
static void dh_from_da(const float *da, const float *w_hh, float *dh, int rows, int width) {
    int m = width, n = rows, k = 4 * width, lda = width, ldb = 4 * width, ldc = width;
    float one = 1.0f;
    blas_sgemm("N", "N", &m, &n, &k, &one, w_hh, &lda, da, &ldb, &one, dh, &ldc);
}

/* Rows [start, end) forward through every time step: gates hold the input's part (x W_ih^T) on entry. c and h
 * are steps + 1 slices (c_{-1} = h_{-1} = 0 first), the others steps; each slice batch x width (gates 4*width). */
static void lstm_sequence_forward_part(void *context, int p, int parts) {
    LstmJob *job = context;
    int64_t start, end, b = job->batch, w = job->width;
    share(b, 1, p, parts, &start, &end);
    int rows = (int)(end - start);
    for (int64_t t = 0; t < job->steps && rows > 0; t++) {
        float *gates = job->gates + (t * b + start) * 4 * w;
        const float *h_prev = job->h + (t * b + start) * w;
        gates_from_h(h_prev, job->w_hh, gates, rows, (int)w);
        lstm_step_forward(gates, job->bias, job->g + (t * b + start) * w, job->c + (t * b + start) * w,
                          job->c + ((t + 1) * b + start) * w, job->tanh_c + (t * b + start) * w,
                          job->h + ((t + 1) * b + start) * w, rows, w);
    }
}

/* Rows [start, end) backward through every time step, last first: dh holds each step's direct gradient on entry
 * and the total on return; dc (batch x width) is zeroed here. */
static void lstm_sequence_backward_part(void *context, int p, int parts) {
    LstmJob *job = context;
    int64_t start, end, b = job->batch, w = job->width;
    share(b, 1, p, parts, &start, &end);
    int rows = (int)(end - start);
    if (rows <= 0) return;
    float *dc = job->dc + start * w;
    memset(dc, 0, sizeof(float) * rows * w);
    for (int64_t t = job->steps - 1; t >= 0; t--) {
        float *dgates = job->dgates + (t * b + start) * 4 * w;
        lstm_step_backward(job->dh + (t * b + start) * w, job->tanh_c + (t * b + start) * w,
                           job->gates + (t * b + start) * 4 * w, job->g + (t * b + start) * w,
                           job->c + (t * b + start) * w, dc, dgates, rows, w);
        if (t) dh_from_da(dgates, job->w_hh, job->dh + ((t - 1) * b + start) * w, rows, (int)w);
    }
}

/* The checks both sequence kernels make of their sizes. */
static int lstm_sequence_sizes(LstmJob *job, long long steps, long long batch, long long width) {
    if (!blas_sgemm) {
        PyErr_SetString(PyExc_RuntimeError, "lstm_sequence: no BLAS (see use_blas)");
        return 0;
    }
    if (steps < 0 || batch < 0 || width < 0 || batch > INT32_MAX || 4 * width > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "lstm_sequence: steps, batch and width must be >= 0 (and fit BLAS's int)");
        return 0;
    }
    job->steps = steps, job->batch = batch, job->width = width;
    return 1;
}

static PyObject *lstm_sequence_forward(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long gates, bias, g, c, tanh_c, h, w_hh;
    long long steps, batch, width;
    if (!PyArg_ParseTuple(args, "KKKKKKKLLL", &gates, &bias, &g, &c, &tanh_c, &h, &w_hh, &steps, &batch, &width))
        return NULL;
    LstmJob job = {.gates = (float *)(uintptr_t)gates, .bias = (const float *)(uintptr_t)bias,
                        .g = (float *)(uintptr_t)g, .c = (float *)(uintptr_t)c, .tanh_c = (float *)(uintptr_t)tanh_c,
                        .h = (float *)(uintptr_t)h, .w_hh = (const float *)(uintptr_t)w_hh};
    if (!lstm_sequence_sizes(&job, steps, batch, width)) return NULL;
    team_run(lstm_sequence_forward_part, &job, lstm_team_size(batch, width));
    Py_RETURN_NONE;
}

static PyObject *lstm_sequence_backward(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long gates, dh, g, c, tanh_c, dc, dgates, w_hh;
    long long steps, batch, width;
    if (!PyArg_ParseTuple(args, "KKKKKKKKLLL", &gates, &dh, &g, &c, &tanh_c, &dc, &dgates, &w_hh, &steps, &batch,
                          &width))
        return NULL;
    LstmJob job = {.gates = (float *)(uintptr_t)gates, .dh = (float *)(uintptr_t)dh, .g = (float *)(uintptr_t)g,
                        .c = (float *)(uintptr_t)c, .tanh_c = (float *)(uintptr_t)tanh_c, .dc = (float *)(uintptr_t)dc,
                        .dgates = (float *)(uintptr_t)dgates, .w_hh = (const float *)(uintptr_t)w_hh};
    if (!lstm_sequence_sizes(&job, steps, batch, width)) return NULL;
    team_run(lstm_sequence_backward_part, &job, lstm_team_size(batch, width));
    Py_RETURN_NONE;
}

static PyObject *use_blas(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long sgemm;
    if (!PyArg_ParseTuple(args, "K", &sgemm)) return NULL;
    blas_sgemm = (Sgemm)(uintptr_t)sgemm;
    Py_RETURN_NONE;
}

static PyObject *accuracy(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long logits_address, targets_address;
    long long rows, classes;
    if (!PyArg_ParseTuple(args, "KKLL", &logits_address, &targets_address, &rows, &classes)) return NULL;
    if (rows < 0 || classes < 1) {
        PyErr_SetString(PyExc_ValueError, "accuracy: rows must be >= 0 and classes >= 1");
        return NULL;
    }
    const float *logits = (const float *)(uintptr_t)logits_address;
    const int64_t *targets = (const int64_t *)(uintptr_t)targets_address;
    long long right = 0;
    for (long long r = 0; r < rows; r++, logits += classes) {
        long long best = 0;
        for (long long c = 1; c < classes && !isnan(logits[best]); c++)
            if (isnan(logits[c]) || logits[c] > logits[best]) best = c;
        right += best == targets[r];
    }
    return PyLong_FromLongLong(right);
}

static PyObject *use_threads(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long parallel, max_threads, thread_num, num_threads;
    if (!PyArg_ParseTuple(args, "KKKK", &parallel, &max_threads, &thread_num, &num_threads)) return NULL;
    if (!parallel != !max_threads || !parallel != !thread_num || !parallel != !num_threads) {
        PyErr_SetString(PyExc_ValueError, "use_threads: all four entry points, or none (0)");
        return NULL;
    }
    team_parallel = (GompParallel)(uintptr_t)parallel;
    team_max_threads = (OmpQuery)(uintptr_t)max_threads;
    team_thread_num = (OmpQuery)(uintptr_t)thread_num;
    team_num_threads = (OmpQuery)(uintptr_t)num_threads;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"sumsq", sumsq, METH_VARARGS, "sumsq(addresses, sizes, out): out[i] = sum of squares of float32 tensor i."},
    {"sumsq_one", sumsq_one, METH_VARARGS, "sumsq_one(address, n): the sum of squares of one float32 tensor."},
    {"activation_stats", activation_stats, METH_VARARGS,
     "activation_stats(out, outputs, saturation_inputs, outer, units, inner, low0, high0, low1, high1): "
     "out[b] = mean, std, dead share, saturated share of block b."},
    {"block_stats", block_stats_one, METH_VARARGS,
     "block_stats(out, row, output, saturation_input, outer, units, inner, low0, high0, low1, high1): "
     "out[row] = activation_stats of one block, given by addresses."},
    {"fill_row", fill_row, METH_VARARGS,
     "fill_row(row, sums, sum_columns, values, value_columns): norms and values into a float32 trace row."},
    {"update_ratio", update_ratio, METH_VARARGS,
     "update_ratio(row, updates, weights, ratios, count, scale): row[ratios + i] = scale * row[updates + i] / "
     "row[weights + i]."},
    {"run", run, METH_O, "run(program): the reductions of a planned program (see the module's comment)."},
    {"use_threads", use_threads, METH_VARARGS,
     "use_threads(GOMP_parallel, omp_get_max_threads, omp_get_thread_num, omp_get_num_threads): addresses of the "
     "GNU OpenMP runtime PyTorch runs on, to split large reductions over its threads; four zeros: one thread."},
    {"use_blas", use_blas, METH_VARARGS,
     "use_blas(sgemm_): the address of the Fortran-interface sgemm of the BLAS PyTorch links (LP64), for the "
     "lstm_sequence kernels; 0: none."},
    {"lstm_sequence_forward", lstm_sequence_forward, METH_VARARGS,
     "lstm_sequence_forward(gates, bias, g, c, tanh_c, h, weight_hh, steps, batch, width): an LSTM layer's "
     "recurrence forward, every time step's product and elementwise step, by addresses (see worker.engine)."},
    {"lstm_sequence_backward", lstm_sequence_backward, METH_VARARGS,
     "lstm_sequence_backward(gates, dh, g, c, tanh_c, dc, dgates, weight_hh, steps, batch, width): an LSTM "
     "layer's recurrence backward, by addresses (see worker.engine)."},
    {"lstm_forward", lstm_forward, METH_VARARGS,
     "lstm_forward(gates, bias, g, c_prev, c, tanh_c, h, batch, width): one time step of an LSTM layer's elementwise "
     "forward, by addresses (see worker.engine)."},
    {"lstm_backward", lstm_backward, METH_VARARGS,
     "lstm_backward(dh, tanh_c, gates, g, c_prev, dc, dgates, batch, width): one time step of an LSTM layer's "
     "elementwise backward, by addresses (see worker.engine)."},
    {"accuracy", accuracy, METH_VARARGS,
     "accuracy(logits, targets, rows, classes): how many rows' argmax is their int64 target."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "worker._kernels", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
