/* The machine's fp32 multiply-add peak for the vector width of this build: independent
 * FMA chains in registers, no memory traffic (what `fewshot bench` compares against). */
#include "kernels/kernels.h"

#include <omp.h>

#include "simd/vec.h"

enum { CHAINS = FS_NREGS == 32 ? 16 : 12, ROUNDS = 4096 };

const char *fs_simd_name(void) { return FS_SIMD_NAME; }
int fs_simd_width(void) { return FS_VL; }

/* ROUNDS x CHAINS vector FMAs; the result is consumed so nothing is optimised away. */
static float fma_rounds(float seed)
{
    fs_vf acc[CHAINS];
    for (int c = 0; c < CHAINS; c++)
        acc[c] = vset1(seed + (float)c);
    const fs_vf a = vset1(0.999999f), b = vset1(1e-6f);
    for (int r = 0; r < ROUNDS; r++)
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++)
            acc[c] = vfma(acc[c], a, b);
    fs_vf s = acc[0];
    for (int c = 1; c < CHAINS; c++)
        s = vadd(s, acc[c]);
    float t[FS_VL];
    vstore(t, s);
    return t[0];
}

/* One timed stretch of about `seconds` on `threads` threads: multiply-adds per second. */
static double fma_rate(int threads, double seconds)
{
    double total = 0, longest = 0;
    volatile float sink = 0, seed = 1.f; /* read on every call: nothing to hoist */
#pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(+ : total) reduction(max : longest)
    {
        long calls = 0;
        float s = 0;
        double t0 = omp_get_wtime(), el;
        do {
            for (int k = 0; k < 4; k++, calls++)
                s += fma_rounds(seed + (float)k);
            el = omp_get_wtime() - t0;
        } while (el < seconds);
        sink += s;
        total = (double)calls * ROUNDS * CHAINS * FS_VL;
        longest = el;
    }
    (void)sink;
    return longest > 0 ? total / longest : 0;
}

/* The best of five stretches: on shared cores the peak is what the cores give when the
 * other jobs leave them alone. */
double fs_fma_peak(int threads, double seconds)
{
    double best = 0;
    for (int i = 0; i < 5; i++) {
        double r = fma_rate(threads, seconds / 5);
        if (r > best)
            best = r;
    }
    return best;
}
