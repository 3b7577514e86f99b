// Runs the CUDA kernels of cuda/*.cu on the host, for tests on machines without a GPU
// (tests/cuda_kernels_host.rs compiles this header, cuda/common.cuh and the kernel files with the
// system C++ compiler into a shared library).
//
// A launch runs its blocks one after another. Kernels that synchronise (__syncthreads) run one
// OS thread per CUDA thread of a block, reused for every block, with a barrier per block; their
// __shared__ arrays are function statics (one block at a time uses them). The other kernels run
// their threads one after another on the calling thread. Kernel arguments arrive as in cuLaunchKernel: an array of
// pointers to the values.

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x, y, z;
};

static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* rd_emu_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

inline void __syncthreads() {
    if (!rd_emu_barrier) {
        std::fprintf(stderr, "emu: __syncthreads in a kernel launched without threads\n");
        std::abort();
    }
    rd_emu_barrier->arrive_and_wait();
}

// Non-zero when `pred` is non-zero in any thread of the block (the threads that returned
// excepted). Three barriers: everyone has added, everyone has read, the sum is cleared.
inline int __syncthreads_or(int pred) {
    static std::atomic<int> any{0};
    if (pred) any.store(1);
    __syncthreads();
    int r = any.load();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) any.store(0);
    __syncthreads();
    return r;
}

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}

// IEEE single operations, rounded to nearest (the host compiles without contraction: C++20 ISO
// mode, and x86-64 without FMA).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// Blocks run one after another: their writes are visible to later blocks without a fence.
inline void __threadfence() {}

// Threads of kernels that do not synchronise run one after another, so a plain update is atomic.
// (In kernels that do, only one thread of a block updates a counter.)
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}

// f32 -> f16 bits, round to nearest even (the host's _Float16 conversion).
inline unsigned short rd_emu_f16_bits(float x) {
    _Float16 h = (_Float16)x;
    unsigned short b;
    std::memcpy(&b, &h, 2);
    return b;
}

// f16 bits -> f32 (exact).
inline float rd_emu_f16_value(unsigned short b) {
    _Float16 h;
    std::memcpy(&h, &b, 2);
    return (float)h;
}

template <typename... A, std::size_t... I>
static void rd_emu_call(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<A*>(p[I])...);
}

template <typename... A>
static void rd_emu_launch(void (*k)(A...), const unsigned* g, const unsigned* b, void** p, bool threads) {
    gridDim = dim3{g[0], g[1], g[2]};
    blockDim = dim3{b[0], b[1], b[2]};
    auto seq = std::index_sequence_for<A...>{};
    std::vector<dim3> blocks;
    for (unsigned bz = 0; bz < g[2]; ++bz)
        for (unsigned by = 0; by < g[1]; ++by)
            for (unsigned bx = 0; bx < g[0]; ++bx) blocks.push_back(dim3{bx, by, bz});
    unsigned nt = b[0] * b[1] * b[2];
    if (!threads) {
        for (const dim3& blk : blocks) {
            blockIdx = blk;
            for (unsigned t = 0; t < nt; ++t) {
                threadIdx = dim3{t % b[0], (t / b[0]) % b[1], t / (b[0] * b[1])};
                rd_emu_call(k, p, seq);
            }
        }
        return;
    }
    // One OS thread per CUDA thread for the whole launch, running the blocks in turn. Within a
    // block `inside` serves __syncthreads (a thread that returns drops out of it); `done` lines
    // all threads up between blocks, while thread 0 gives the next block a fresh `inside`.
    std::barrier<> done((std::ptrdiff_t)nt);
    auto inside = std::make_unique<std::barrier<>>((std::ptrdiff_t)nt);
    rd_emu_barrier = inside.get();
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < nt; ++t)
        ts.emplace_back([&, t] {
            dim3 tid{t % b[0], (t / b[0]) % b[1], t / (b[0] * b[1])};
            for (const dim3& blk : blocks) {
                blockIdx = blk;
                threadIdx = tid;
                rd_emu_call(k, p, seq);
                rd_emu_barrier->arrive_and_drop();
                done.arrive_and_wait();
                if (t == 0) {
                    inside = std::make_unique<std::barrier<>>((std::ptrdiff_t)nt);
                    rd_emu_barrier = inside.get();
                }
                done.arrive_and_wait();
            }
        });
    for (auto& t : ts) t.join();
    rd_emu_barrier = nullptr;
}

#include <type_traits>

// The kinds of a kernel's parameters, as the test's KArg: 'p' pointer, 'i' int, 'f' float.
template <typename... A>
static int rd_emu_kinds(void (*)(A...), char* out, int cap) {
    const char kinds[] = {(std::is_pointer_v<A> ? 'p' : std::is_floating_point_v<A> ? 'f' : 'i')..., 0};
    int n = (int)sizeof...(A);
    for (int i = 0; i < n && i < cap; ++i) out[i] = kinds[i];
    return n;
}

// host_NAME(grid[3], block[3], params, threads): one launch of kernel NAME;
// kinds_NAME(out, cap): its parameter kinds ('p', 'i', 'f') and count.
#define RD_EMU_EXPORT(name)                                                                     \
    extern "C" void host_##name(const unsigned* g, const unsigned* b, void** p, int threads) { \
        rd_emu_launch(name, g, b, p, threads != 0);                                             \
    }                                                                                           \
    extern "C" int kinds_##name(char* out, int cap) { return rd_emu_kinds(name, out, cap); }
