/* Philox4x32-10 and the draws built on it (see rng.h). */
#include "base/rng.h"

#include <math.h>

enum { PHILOX_ROUNDS = 10 };
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void fs_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0, c1 = (uint32_t)p1, c2 = n2, c3 = (uint32_t)p0;
        k0 += PHILOX_W0, k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static void block(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    const uint32_t ctr[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    fs_philox4x32(ctr, key, out);
}

uint32_t fs_rng_u32(uint64_t seed, uint64_t stream, uint64_t counter)
{
    uint32_t o[4];
    block(seed, stream, counter, o);
    return o[0];
}

uint64_t fs_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter)
{
    uint32_t o[4];
    block(seed, stream, counter, o);
    return (uint64_t)o[0] | (uint64_t)o[1] << 32;
}

/* Distinct counter space from ordinary streams: the top counter word is all ones. */
uint64_t fs_rng_derive(uint64_t seed, uint64_t stream)
{
    return fs_rng_u64(seed, stream, UINT64_MAX);
}

void fs_rng_stream_init(fs_rng_stream *s, uint64_t seed, uint64_t stream_id)
{
    *s = (fs_rng_stream){.key = seed, .stream_id = stream_id, .counter = 0, .pos = 4};
}

uint32_t fs_rng_next_u32(fs_rng_stream *s)
{
    if (s->pos >= 4) {
        block(s->key, s->stream_id, s->counter++, s->buf);
        s->pos = 0;
    }
    return s->buf[s->pos++];
}

uint64_t fs_rng_next_u64(fs_rng_stream *s)
{
    uint64_t lo = fs_rng_next_u32(s);
    return lo | (uint64_t)fs_rng_next_u32(s) << 32;
}

float fs_rng_next_float(fs_rng_stream *s) { return fs_u32_to_float(fs_rng_next_u32(s)); }

double fs_rng_next_double(fs_rng_stream *s) { return fs_u64_to_double(fs_rng_next_u64(s)); }

/* Lemire's multiply-shift with rejection of the biased low range. */
uint32_t fs_rng_next_below(fs_rng_stream *s, uint32_t n)
{
    uint64_t m = (uint64_t)fs_rng_next_u32(s) * n;
    if ((uint32_t)m < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while ((uint32_t)m < threshold)
            m = (uint64_t)fs_rng_next_u32(s) * n;
    }
    return (uint32_t)(m >> 32);
}

double fs_rng_next_normal(fs_rng_stream *s)
{
    if (s->has_spare) {
        s->has_spare = false;
        return s->spare;
    }
    double u1 = 1.0 - fs_rng_next_double(s); /* (0,1]: log is finite */
    double u2 = fs_rng_next_double(s);
    double r = sqrt(-2.0 * log(u1));
    double t = 6.283185307179586476925 * u2;
    s->spare = r * sin(t);
    s->has_spare = true;
    return r * cos(t);
}

double fs_rng_next_trunc_normal(fs_rng_stream *s)
{
    for (;;) {
        double z = fs_rng_next_normal(s);
        if (z >= -2.0 && z <= 2.0)
            return z;
    }
}
