/* Sampling one sequence (docs/sampling.md), with the semantics of the reference's
 * samplers.get_constant_burst_seq_idxs, get_exemplar_inds and make_data_sampler:
 * distributions match, RNG streams do not. */
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "train/sampler.h"

/* Counter of the mixing draw: far beyond any counter a sequence's own draws reach. */
#define MIX_COUNTER (UINT64_MAX - 1)

size_t fs_seq_scratch_bytes(int context_len)
{
    size_t P = (size_t)context_len + 1;
    return (3 * P + 2) * sizeof(int);
}

/* Insert v into the ascending list excl[0..*m). */
static void insert_sorted(int *excl, int *m, int v)
{
    int i = *m;
    while (i > 0 && excl[i - 1] > v) {
        excl[i] = excl[i - 1];
        i--;
    }
    excl[i] = v;
    (*m)++;
}

static int is_excluded(const int *excl, int m, int v)
{
    for (int i = 0; i < m; i++)
        if (excl[i] == v)
            return 1;
    return 0;
}

/* A class index in [0,n) from the distribution (uniform, or `cdf`) renormalised over
 * the classes not in excl[0..m) (ascending): draw in the reduced range, then step over
 * each excluded class below the draw. */
static int draw_class(fs_rng_stream *rs, int n, const double *cdf, const int *excl, int m)
{
    if (!cdf) {
        int x = (int)fs_rng_next_below(rs, (uint32_t)(n - m));
        for (int i = 0; i < m && excl[i] <= x; i++)
            x++;
        return x;
    }
    double removed = 0;
    for (int i = 0; i < m; i++)
        removed += cdf[excl[i]] - (excl[i] ? cdf[excl[i] - 1] : 0.0);
    for (int attempt = 0; attempt < 64; attempt++) {
        double u = fs_rng_next_double(rs) * (1.0 - removed);
        for (int i = 0; i < m; i++) {
            double lo = excl[i] ? cdf[excl[i] - 1] : 0.0;
            if (u >= lo)
                u += cdf[excl[i]] - lo;
        }
        int a = 0, b = n - 1; /* first index with cdf > u */
        while (a < b) {
            int mid = a + (b - a) / 2;
            if (cdf[mid] > u)
                b = mid;
            else
                a = mid + 1;
        }
        if (!is_excluded(excl, m, a)) /* false only by rounding at an interval edge */
            return a;
    }
    for (int x = 0; x < n; x++) /* unreachable in practice */
        if (!is_excluded(excl, m, x))
            return x;
    return 0;
}

/* Classes and item types of the context (local class indices), then the query. */
static void sample_classes(const fs_task *t, const fs_seq_spec *s, fs_rng_stream *rs, int *cls, int *type,
                           int *excl)
{
    const int n = t->classes[s->classes].count, ctx = s->context_len, b = s->burstiness;
    const double *cdf = s->zipf ? t->zipf_cdf : NULL;
    const int distractor = b > 0 && s->distract;
    int m = 0;
    const int q = draw_class(rs, n, cdf, excl, 0);
    insert_sorted(excl, &m, q);
    int d = -1;
    if (distractor) {
        d = draw_class(rs, n, cdf, excl, m);
        insert_sorted(excl, &m, d);
    }
    const int rest = ctx - b - (distractor ? b : 0);
    for (int i = 0; i < rest; i++) {
        if (s->unique_rest) {
            cls[i] = draw_class(rs, n, cdf, excl, m);
            insert_sorted(excl, &m, cls[i]);
        } else {
            cls[i] = draw_class(rs, n, cdf, excl, s->no_support ? m : 0);
        }
        type[i] = FS_ITEM_OTHER;
    }
    for (int i = 0; i < b; i++) {
        cls[rest + i] = q, type[rest + i] = FS_ITEM_BURSTY;
        if (distractor)
            cls[rest + b + i] = d, type[rest + b + i] = FS_ITEM_DISTRACTOR;
    }
    if (b > 0) /* shuffle the context (the reference only shuffles when it adds bursts) */
        for (int i = ctx - 1; i > 0; i--) {
            int j = (int)fs_rng_next_below(rs, (uint32_t)i + 1);
            int c = cls[i], ty = type[i];
            cls[i] = cls[j], type[i] = type[j];
            cls[j] = c, type[j] = ty;
        }
    cls[ctx] = q, type[ctx] = FS_ITEM_QUERY;
}

/* Examples: exemplar uniform over the allowed split, per item; with
 * match_query_and_distractors bursty+query share one exemplar and distractors another. */
static void fill_examples(const fs_task *t, const fs_seq_spec *s, fs_rng_stream *rs, const int *cls,
                          const int *type, int P, float *examples)
{
    const fs_dataset *data = t->data;
    const fs_range cr = t->classes[s->classes], er = t->exemplars[s->exemplars];
    int match_q = -1, match_d = -1;
    if (s->match_query_and_distractors) {
        match_q = er.start + (int)fs_rng_next_below(rs, (uint32_t)er.count);
        match_d = er.start + (int)fs_rng_next_below(rs, (uint32_t)er.count);
    }
    for (int i = 0; i < P; i++) {
        int ex;
        if (match_q >= 0 && (type[i] == FS_ITEM_BURSTY || type[i] == FS_ITEM_QUERY))
            ex = match_q;
        else if (match_d >= 0 && type[i] == FS_ITEM_DISTRACTOR)
            ex = match_d;
        else
            ex = er.start + (int)fs_rng_next_below(rs, (uint32_t)er.count);
        memcpy(examples + (size_t)i * data->dim, fs_dataset_row(data, cr.start + cls[i], ex),
               (size_t)data->dim * sizeof(float));
    }
    if (s->noise_scale > 0) {
        size_t total = (size_t)P * data->dim;
        for (size_t i = 0; i < total; i++)
            examples[i] += (float)(s->noise_scale * fs_rng_next_normal(rs));
    }
}

/* Labels: the dataset class index; assign_query_label_random copies the query's label
 * onto one random context item; relabelling (which, as in the reference, starts again
 * from the class indices) gives BURSTY and QUERY the first label of a randomly ordered
 * pair, DISTRACTOR the second, and leaves OTHER items their class index. */
static void fill_labels(const fs_task *t, const fs_seq_spec *s, fs_rng_stream *rs, const int *cls,
                        const int *type, int P, int *labels)
{
    const int start = t->classes[s->classes].start;
    for (int i = 0; i < P; i++)
        labels[i] = start + cls[i];
    if (s->relabel != FS_NO_RELABEL) {
        fs_label_pair p = t->pairs[s->relabel][fs_rng_next_below(rs, (uint32_t)t->num_pairs[s->relabel])];
        int first = p.first, second = p.second;
        if (fs_rng_next_below(rs, 2)) {
            first = p.second;
            second = p.first;
        }
        for (int i = 0; i < P; i++) {
            if (type[i] == FS_ITEM_BURSTY || type[i] == FS_ITEM_QUERY)
                labels[i] = first;
            else if (type[i] == FS_ITEM_DISTRACTOR)
                labels[i] = second;
        }
    } else if (s->assign_query_label_random && P > 1) {
        labels[fs_rng_next_below(rs, (uint32_t)(P - 1))] = labels[P - 1];
    }
}

void fs_sample_sequence(const fs_task *t, const fs_seq_spec *s, uint64_t seed, uint64_t stream,
                        uint64_t seq_index, float *examples, int *labels, int *item_types, void *scratch)
{
    const int P = s->context_len + 1;
    int *cls = scratch, *type = cls + P, *excl = type + P;
    fs_rng_stream rs;
    fs_rng_stream_init(&rs, fs_rng_derive(seed, stream), seq_index);
    sample_classes(t, s, &rs, cls, type, excl);
    fill_examples(t, s, &rs, cls, type, P, examples);
    fill_labels(t, s, &rs, cls, type, P, labels);
    if (item_types)
        memcpy(item_types, type, (size_t)P * sizeof(int));
}

int fs_seq_mix_pick(const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t seq_index)
{
    if (m->count <= 1)
        return 0;
    double u = fs_u64_to_double(fs_rng_u64(fs_rng_derive(seed, stream), seq_index, MIX_COUNTER));
    for (int i = 0; i < m->count; i++)
        if (u < m->cum[i])
            return i;
    return m->count - 1;
}

void fs_sample_mixed(const fs_task *t, const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t seq_index,
                     float *examples, int *labels, int *item_types, void *scratch)
{
    const fs_seq_spec *s = &m->specs[fs_seq_mix_pick(m, seed, stream, seq_index)];
    fs_sample_sequence(t, s, seed, stream, seq_index, examples, labels, item_types, scratch);
}

int fs_sample_batch(const fs_task *t, const fs_seq_mix *m, uint64_t seed, uint64_t stream, uint64_t first, int n,
                    float *examples, int *labels, int *item_types, fs_error *err)
{
    const int P = m->specs[0].context_len + 1, D = t->data->dim;
    const size_t scratch_bytes = fs_seq_scratch_bytes(m->specs[0].context_len);
    int failed = 0;
#pragma omp parallel if (n > 1) reduction(| : failed)
    {
        void *scratch = malloc(scratch_bytes);
        if (!scratch)
            failed = 1;
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            if (scratch)
                fs_sample_mixed(t, m, seed, stream, first + (uint64_t)i, examples + (size_t)i * P * D,
                                labels + (size_t)i * P, item_types ? item_types + (size_t)i * P : NULL, scratch);
        free(scratch);
    }
    return failed ? fs_fail(err, "sampling a batch of %d sequences: out of memory", n) : 0;
}
