/* Philox4x32-10 known answers and distribution checks of the draws. */
#include <criterion/criterion.h>
#include <math.h>

#include "base/rng.h"

Test(rng, philox_known_answers)
{
    /* Random123 kat_vectors: philox4x32 10 rounds. */
    uint32_t out[4];
    const uint32_t zero_ctr[4] = {0, 0, 0, 0}, zero_key[2] = {0, 0};
    fs_philox4x32(zero_ctr, zero_key, out);
    cr_expect_eq(out[0], 0x6627e8d5u);
    cr_expect_eq(out[1], 0xe169c58du);
    cr_expect_eq(out[2], 0xbc57ac4cu);
    cr_expect_eq(out[3], 0x9b00dbd8u);

    const uint32_t ones_ctr[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    const uint32_t ones_key[2] = {0xffffffffu, 0xffffffffu};
    fs_philox4x32(ones_ctr, ones_key, out);
    cr_expect_eq(out[0], 0x408f276du);
    cr_expect_eq(out[1], 0x41c83b0eu);
    cr_expect_eq(out[2], 0xa20bc7c6u);
    cr_expect_eq(out[3], 0x6d5451fdu);

    const uint32_t pi_ctr[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
    const uint32_t pi_key[2] = {0xa4093822u, 0x299f31d0u};
    fs_philox4x32(pi_ctr, pi_key, out);
    cr_expect_eq(out[0], 0xd16cfe09u);
    cr_expect_eq(out[1], 0x94fdccebu);
    cr_expect_eq(out[2], 0x5001e420u);
    cr_expect_eq(out[3], 0x24126ea1u);
}

Test(rng, stream_matches_stateless_and_depends_only_on_inputs)
{
    fs_rng_stream s;
    fs_rng_stream_init(&s, 42, 7);
    for (uint64_t c = 0; c < 5; c++) {
        uint32_t block[4];
        for (int w = 0; w < 4; w++)
            block[w] = fs_rng_next_u32(&s);
        cr_expect_eq(block[0], fs_rng_u32(42, 7, c));
        cr_expect_eq((uint64_t)block[0] | (uint64_t)block[1] << 32, fs_rng_u64(42, 7, c));
    }
    cr_expect_neq(fs_rng_u32(42, 7, 0), fs_rng_u32(43, 7, 0));
    cr_expect_neq(fs_rng_u32(42, 7, 0), fs_rng_u32(42, 8, 0));
    cr_expect_neq(fs_rng_u32(42, 7, 0), fs_rng_u32(42, 7, 1));
    cr_expect_neq(fs_rng_derive(1, 2), fs_rng_derive(1, 3));
    cr_expect_neq(fs_rng_derive(1, 2), fs_rng_derive(2, 2));
}

Test(rng, uniform_float_moments)
{
    fs_rng_stream s;
    fs_rng_stream_init(&s, 1, 0);
    const int n = 200000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) {
        float u = fs_rng_next_float(&s);
        cr_assert(u >= 0.0f && u < 1.0f);
        sum += u, sq += (double)u * u;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    /* sd of the mean = sqrt(1/12/n) ~ 6.5e-4; allow 6 sd. */
    cr_expect(fabs(mean - 0.5) < 4e-3, "mean %g", mean);
    cr_expect(fabs(var - 1.0 / 12) < 2e-3, "var %g", var);
}

Test(rng, below_is_uniform_and_in_range)
{
    fs_rng_stream s;
    fs_rng_stream_init(&s, 2, 0);
    enum { K = 7, N = 70000 };
    int counts[K] = {0};
    for (int i = 0; i < N; i++) {
        uint32_t v = fs_rng_next_below(&s, K);
        cr_assert_lt(v, K);
        counts[v]++;
    }
    double chi2 = 0, e = (double)N / K;
    for (int k = 0; k < K; k++)
        chi2 += (counts[k] - e) * (counts[k] - e) / e;
    cr_expect_lt(chi2, 22.5, "chi2 %g (6 dof, p=0.001 at 22.46)", chi2);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(fs_rng_next_below(&s, 1), 0u);
    /* A huge n exercises the rejection path. */
    for (int i = 0; i < 1000; i++)
        cr_assert_lt(fs_rng_next_below(&s, 3000000000u), 3000000000u);
}

Test(rng, normal_moments)
{
    fs_rng_stream s;
    fs_rng_stream_init(&s, 3, 11);
    const int n = 200000;
    double m1 = 0, m2 = 0, m4 = 0;
    for (int i = 0; i < n; i++) {
        double z = fs_rng_next_normal(&s);
        cr_assert(isfinite(z));
        m1 += z, m2 += z * z, m4 += z * z * z * z;
    }
    m1 /= n, m2 /= n, m4 /= n;
    cr_expect(fabs(m1) < 0.015, "mean %g", m1);   /* sd 0.0022 */
    cr_expect(fabs(m2 - 1) < 0.02, "var %g", m2); /* sd 0.0032 */
    cr_expect(fabs(m4 - 3) < 0.15, "m4 %g", m4);  /* sd ~0.022 */
}

Test(rng, truncated_normal_bounds_and_variance)
{
    fs_rng_stream s;
    fs_rng_stream_init(&s, 4, 0);
    const int n = 200000;
    double m1 = 0, m2 = 0;
    for (int i = 0; i < n; i++) {
        double z = fs_rng_next_trunc_normal(&s);
        cr_assert(z >= -2.0 && z <= 2.0, "%g", z);
        m1 += z, m2 += z * z;
    }
    m1 /= n, m2 /= n;
    /* Variance of N(0,1) truncated at +-2: 1 - 4 phi(2) / (2 Phi(2) - 1) = 0.7737. */
    cr_expect(fabs(m1) < 0.012, "mean %g", m1);
    cr_expect(fabs(m2 - 0.7737) < 0.012, "var %g", m2);
}
