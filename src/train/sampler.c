/* Tasks and sequence specs: splits, relabel pairs, class distribution (docs/sampling.md),
 * resolved the way the reference's main_utils.get_splits_from_opts and main.py do. */
#include "train/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"

#define ORIGIN(o) ((o) ? (o) : "config")

enum { RELABEL_SPLIT_ATTEMPTS = 100, RELABEL_STREAM = 0x52454c42 };

void fs_task_free(fs_task *t)
{
    if (t) {
        free(t->pair_storage);
        free(t->zipf_cdf);
        *t = (fs_task){0};
    }
}

/* Contiguous ranges in split order; "all" spans everything (reference get_splits_from_opts). */
static void set_ranges(fs_range r[4], const int split[3], int total)
{
    r[FS_SPLIT_TRAIN] = (fs_range){0, split[0]};
    r[FS_SPLIT_VAL] = (fs_range){split[0], split[1]};
    r[FS_SPLIT_TEST] = (fs_range){split[0] + split[1], split[2]};
    r[FS_SPLIT_ALL] = (fs_range){0, total};
}

static int every_label_in(const fs_label_pair *p, int n, int L)
{
    int seen = 0;
    char *hit = calloc((size_t)L, 1);
    if (!hit)
        return 0;
    for (int i = 0; i < n; i++) {
        seen += !hit[p[i].first] + !hit[p[i].second];
        hit[p[i].first] = hit[p[i].second] = 1;
    }
    free(hit);
    return seen == L;
}

/* Pairs (a,b), a<b<L, split by fs_relabel_split: counts floor(n * s_i / sum s) for test
 * and val, the rest to train, after a seeded shuffle; reshuffled until every label is
 * in the train set. A zero split puts every pair in train (the reference's None). */
static int split_relabel_pairs(fs_task *t, const fs_data_config *cfg, const char *origin, fs_error *err)
{
    int L = cfg->fs_relabel, n = L * (L - 1) / 2;
    if (L < 2)
        return fs_fail(err, "%s: data.fs_relabel: expected 0 (off) or >= 2 labels, got %d", origin, L);
    if (!(t->pair_storage = malloc((size_t)n * sizeof *t->pair_storage)))
        return fs_fail(err, "%s: data.fs_relabel: out of memory for %d pairs", origin, n);
    const double *s = cfg->fs_relabel_split;
    double sum = s[0] + s[1] + s[2];
    int n_test = 0, n_val = 0;
    if (sum > 0) {
        n_test = (int)(n * s[2] / sum); /* (n * split) / sum, as numpy evaluates it */
        n_val = (int)(n * s[1] / sum);
    }
    int n_train = n - n_test - n_val;
    for (int attempt = 0;; attempt++) {
        int k = 0;
        for (int a = 0; a < L; a++)
            for (int b = a + 1; b < L; b++)
                t->pair_storage[k++] = (fs_label_pair){a, b};
        if (sum > 0) {
            fs_rng_stream rs;
            fs_rng_stream_init(&rs, (uint64_t)cfg->fs_relabel_split_seed, RELABEL_STREAM + (uint64_t)attempt);
            for (int i = n - 1; i > 0; i--) {
                int j = (int)fs_rng_next_below(&rs, (uint32_t)i + 1);
                fs_label_pair tmp = t->pair_storage[i];
                t->pair_storage[i] = t->pair_storage[j], t->pair_storage[j] = tmp;
            }
        }
        if (every_label_in(t->pair_storage + n_test + n_val, n_train, L))
            break;
        if (sum == 0 || attempt + 1 >= RELABEL_SPLIT_ATTEMPTS)
            return fs_fail(err, "%s: data.fs_relabel_split: no split of the %d label pairs of fs_relabel %d leaves "
                           "every label in the train set (train gets %d pairs; expected a larger train share)",
                           origin, n, L, n_train);
    }
    t->pairs[FS_SPLIT_TEST] = t->pair_storage;
    t->pairs[FS_SPLIT_VAL] = t->pair_storage + n_test;
    t->pairs[FS_SPLIT_TRAIN] = t->pair_storage + n_test + n_val;
    t->num_pairs[FS_SPLIT_TEST] = n_test;
    t->num_pairs[FS_SPLIT_VAL] = n_val;
    t->num_pairs[FS_SPLIT_TRAIN] = n_train;
    t->pairs[FS_SPLIT_ALL] = t->pair_storage;
    t->num_pairs[FS_SPLIT_ALL] = n;
    return 0;
}

/* p(rank r) ~ r^-alpha over train classes in index order (reference main.py). */
static int make_zipf(fs_task *t, double alpha, const char *origin, fs_error *err)
{
    int n = t->classes[FS_SPLIT_TRAIN].count;
    if (n < 1)
        return 0;
    if (!(t->zipf_cdf = malloc((size_t)n * sizeof *t->zipf_cdf)))
        return fs_fail(err, "%s: data.zipf_alpha: out of memory", origin);
    double acc = 0;
    for (int i = 0; i < n; i++)
        t->zipf_cdf[i] = acc += pow(i + 1.0, -alpha);
    for (int i = 0; i < n; i++)
        t->zipf_cdf[i] /= acc;
    t->zipf_cdf[n - 1] = 1.0;
    return 0;
}

int fs_task_init(fs_task *t, const fs_dataset *data, const fs_data_config *cfg, const char *origin, fs_error *err)
{
    *t = (fs_task){0};
    origin = ORIGIN(origin);
    const int *cs = cfg->class_split, *es = cfg->exemplar_split;
    for (int i = 0; i < 3; i++)
        if (cs[i] < 0 || es[i] < 0)
            return fs_fail(err, "%s: data.class_split/exemplar_split: expected counts >= 0", origin);
    if ((long)cs[0] + cs[1] + cs[2] != data->num_classes)
        return fs_fail(err, "%s: data.class_split: [%d, %d, %d] sums to %ld, expected the dataset's %d classes",
                       origin, cs[0], cs[1], cs[2], (long)cs[0] + cs[1] + cs[2], data->num_classes);
    if ((long)es[0] + es[1] + es[2] != data->num_exemplars)
        return fs_fail(err, "%s: data.exemplar_split: [%d, %d, %d] sums to %ld, expected the dataset's %d exemplars per class",
                       origin, es[0], es[1], es[2], (long)es[0] + es[1] + es[2], data->num_exemplars);
    for (int i = 0; i < 3; i++)
        if (!(cfg->fs_relabel_split[i] >= 0) || !isfinite(cfg->fs_relabel_split[i]))
            return fs_fail(err, "%s: data.fs_relabel_split: expected 3 finite weights >= 0", origin);
    if (!(cfg->noise_scale >= 0) || !isfinite(cfg->noise_scale))
        return fs_fail(err, "%s: data.noise_scale: expected a finite value >= 0, got %g", origin, cfg->noise_scale);
    if (!(cfg->zipf_alpha >= 0) || !isfinite(cfg->zipf_alpha))
        return fs_fail(err, "%s: data.zipf_alpha: expected a finite value >= 0, got %g", origin, cfg->zipf_alpha);
    t->data = data;
    set_ranges(t->classes, cs, data->num_classes);
    set_ranges(t->exemplars, es, data->num_exemplars);
    t->relabel = cfg->fs_relabel;
    t->num_classes = cfg->fs_relabel > 0 ? cfg->fs_relabel : cs[0];
    t->noise_scale = cfg->noise_scale;
    t->assign_query_label_random = cfg->assign_query_label_random;
    t->match_query_and_distractors = cfg->match_query_and_distractors;
    if ((cfg->fs_relabel != 0 && split_relabel_pairs(t, cfg, origin, err)) ||
        (cfg->zipf_alpha > 0 && make_zipf(t, cfg->zipf_alpha, origin, err))) {
        fs_task_free(t);
        return -1;
    }
    return 0;
}

int fs_seq_spec_check(const fs_task *t, const fs_seq_spec *s, const char *what, fs_error *err)
{
    const char *split_c = fs_split_name(s->classes), *split_e = fs_split_name(s->exemplars);
    if (s->classes < 0 || s->classes > FS_SPLIT_ALL || s->exemplars < 0 || s->exemplars > FS_SPLIT_ALL)
        return fs_fail(err, "%s: classes/exemplars: expected train, val, test or all", what);
    int n = t->classes[s->classes].count, b = s->burstiness, ctx = s->context_len;
    if (n < 1)
        return fs_fail(err, "%s: classes \"%s\": the split has no classes (data.class_split)", what, split_c);
    if (t->exemplars[s->exemplars].count < 1)
        return fs_fail(err, "%s: exemplars \"%s\": the split has no exemplars (data.exemplar_split)", what, split_e);
    if (ctx < 0 || b < 0 || b > ctx)
        return fs_fail(err, "%s: burstiness: expected 0..context_len (%d), got %d", what, ctx, b);
    bool distractor = b > 0 && s->distract;
    if (distractor && 2 * b > ctx)
        return fs_fail(err, "%s: burstiness %d with a distractor needs context_len >= %d, got %d", what, b, 2 * b, ctx);
    if (distractor && n < 2)
        return fs_fail(err, "%s: distract: needs >= 2 classes in split \"%s\", got %d", what, split_c, n);
    int rest = ctx - b - (distractor ? b : 0), excluded = 1 + distractor;
    if (rest > 0 && s->unique_rest && n - excluded < rest)
        return fs_fail(err, "%s: unique_rest: %d distinct other classes needed, split \"%s\" has only %d", what,
                       rest, split_c, n - excluded);
    if (rest > 0 && s->no_support && n - excluded < 1)
        return fs_fail(err, "%s: no_support: split \"%s\" has no class besides the query%s", what, split_c,
                       distractor ? " and distractor" : "");
    if (s->zipf && (s->classes != FS_SPLIT_TRAIN || !t->zipf_cdf))
        return fs_fail(err, "%s: a Zipf class distribution applies to train classes only", what);
    if (s->relabel != FS_NO_RELABEL) {
        if (s->relabel < FS_SPLIT_TRAIN || s->relabel > FS_SPLIT_ALL || t->relabel == 0)
            return fs_fail(err, "%s: fs_relabel_scheme: relabelling needs data.fs_relabel > 0", what);
        if (t->num_pairs[s->relabel] < 1)
            return fs_fail(err, "%s: fs_relabel_scheme \"%s\": data.fs_relabel_split gives this split no label pairs",
                           what, fs_split_name((fs_split)s->relabel));
    }
    if (!(s->noise_scale >= 0) || !isfinite(s->noise_scale))
        return fs_fail(err, "%s: noise_scale: expected a finite value >= 0, got %g", what, s->noise_scale);
    return 0;
}

int fs_seq_spec_from_sampler(fs_seq_spec *s, const fs_task *t, const fs_train_config *train, int index,
                             const char *origin, fs_error *err)
{
    const fs_sampler_config *c = &train->samplers[index];
    *s = (fs_seq_spec){
        .classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN, .context_len = train->train_context_len,
        .burstiness = c->burstiness, .distract = c->distract, .no_support = c->no_support,
        .unique_rest = c->unique_rest, .zipf = t->zipf_cdf != NULL,
        .relabel = t->relabel > 0 ? FS_SPLIT_TRAIN : FS_NO_RELABEL, .noise_scale = t->noise_scale,
        .assign_query_label_random = t->assign_query_label_random,
        .match_query_and_distractors = t->match_query_and_distractors,
    };
    char what[256];
    snprintf(what, sizeof what, "%s: train.samplers[%d] (train_context_len %d)", ORIGIN(origin), index,
             train->train_context_len);
    return fs_seq_spec_check(t, s, what, err);
}

int fs_seq_spec_from_evaluator(fs_seq_spec *s, const fs_task *t, const fs_evaluator_config *ev,
                               int train_context_len, const char *origin, fs_error *err)
{
    *s = (fs_seq_spec){
        .classes = ev->classes,
        /* main_utils: "if the class for this eval sampler is not train, [exemplars] will
         * get overridden to all" (reference/ih_main_run.md: fsl_test_class uses all). */
        .exemplars = ev->classes == FS_SPLIT_TRAIN ? ev->exemplars : FS_SPLIT_ALL,
        .context_len = ev->context_len > 0 ? ev->context_len : train_context_len,
        .burstiness = ev->burstiness, .distract = ev->distract, .no_support = ev->no_support,
        .unique_rest = ev->unique_rest, .zipf = false,
        .relabel = (t->relabel > 0 && ev->fs_relabel_scheme != FS_SPLIT_NONE) ? (int)ev->fs_relabel_scheme
                                                                               : FS_NO_RELABEL,
        /* the reference's evaluators default to the training noise */
        .noise_scale = ev->noise_scale < 0 ? t->noise_scale : ev->noise_scale, .assign_query_label_random = ev->assign_query_label_random,
        .match_query_and_distractors = t->match_query_and_distractors,
    };
    char what[256];
    snprintf(what, sizeof what, "%s: eval.evaluators \"%s\"", ORIGIN(origin), ev->name);
    return fs_seq_spec_check(t, s, what, err);
}

int fs_seq_mix_from_train(fs_seq_mix *m, const fs_task *t, const fs_train_config *train, const char *origin,
                          fs_error *err)
{
    *m = (fs_seq_mix){0};
    origin = ORIGIN(origin);
    if (train->num_samplers < 1 || train->num_samplers > FS_MAX_SAMPLERS)
        return fs_fail(err, "%s: train.samplers: expected 1..%d samplers, got %d", origin, FS_MAX_SAMPLERS,
                       train->num_samplers);
    double total = 0;
    for (int i = 0; i < train->num_samplers; i++) {
        double c = train->samplers[i].mixing_coeff;
        if (!(c >= 0) || !isfinite(c))
            return fs_fail(err, "%s: train.samplers[%d].mixing_coeff: expected a finite value >= 0, got %g", origin,
                           i, c);
        total += c;
        if (fs_seq_spec_from_sampler(&m->specs[i], t, train, i, origin, err))
            return -1;
    }
    if (!(total > 0))
        return fs_fail(err, "%s: train.samplers: the mixing_coeffs sum to 0, expected a positive sum", origin);
    double acc = 0;
    for (int i = 0; i < train->num_samplers; i++)
        m->cum[i] = (acc += train->samplers[i].mixing_coeff) / total;
    m->cum[train->num_samplers - 1] = 1.0;
    m->count = train->num_samplers;
    return 0;
}

void fs_seq_mix_single(fs_seq_mix *m, const fs_seq_spec *s)
{
    *m = (fs_seq_mix){.count = 1};
    m->specs[0] = *s;
    m->cum[0] = 1.0;
}
