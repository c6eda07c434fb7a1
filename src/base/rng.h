/* Counter-based random numbers: Philox4x32-10 (Salmon et al., Random123).
 * A value depends only on (key/seed, stream, counter), never on how many values were
 * drawn elsewhere, so sequences, batches and parameter inits are reproducible and can
 * be generated in any order or in parallel. */
#ifndef FEWSHOT_RNG_H
#define FEWSHOT_RNG_H

#include <stdbool.h>
#include <stdint.h>

/* One Philox4x32-10 block: 128-bit counter, 64-bit key -> 128 random bits. */
void fs_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Stateless draws: counter block {counter lo, counter hi, stream lo, stream hi},
 * key = seed. fs_rng_u32 returns word 0 of the block, fs_rng_u64 words 0-1. */
uint32_t fs_rng_u32(uint64_t seed, uint64_t stream, uint64_t counter);
uint64_t fs_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter);
/* A 64-bit key derived from (seed, stream), for keying independent families of streams. */
uint64_t fs_rng_derive(uint64_t seed, uint64_t stream);

/* Bits to floats: [0,1) with 24 / 53 random bits. */
static inline float fs_u32_to_float(uint32_t x) { return (float)(x >> 8) * 0x1.0p-24f; }
static inline double fs_u64_to_double(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

/* A stream: key = seed, counter block = {counter, stream_id}. Consumes the four words
 * of each block in turn. The whole state is plain data (checkpointable). */
typedef struct {
    uint64_t key;
    uint64_t stream_id;
    uint64_t counter;  /* next block */
    uint32_t buf[4];
    int pos;           /* next unused word of buf (4 = empty) */
    bool has_spare;    /* Box-Muller's second normal */
    double spare;
} fs_rng_stream;

void fs_rng_stream_init(fs_rng_stream *s, uint64_t seed, uint64_t stream_id);
uint32_t fs_rng_next_u32(fs_rng_stream *s);
uint64_t fs_rng_next_u64(fs_rng_stream *s);
float fs_rng_next_float(fs_rng_stream *s);      /* uniform [0,1) */
double fs_rng_next_double(fs_rng_stream *s);    /* uniform [0,1) */
uint32_t fs_rng_next_below(fs_rng_stream *s, uint32_t n); /* uniform [0,n), unbiased; n >= 1 */
double fs_rng_next_normal(fs_rng_stream *s);    /* N(0,1), Box-Muller */
double fs_rng_next_trunc_normal(fs_rng_stream *s); /* N(0,1) conditioned on [-2,2] */

#endif
