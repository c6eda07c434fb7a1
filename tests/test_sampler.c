/* Tasks, relabel splits, sequence sampling and evaluator sets, checked over many draws
 * with fixed seeds (bounds are several standard deviations wide). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/sampler.h"

enum { K = 30, E = 5, MAXP = 64 };

/* A dataset whose rows name themselves: feat[k][e] = {k, e}. */
static fs_dataset labelled_dataset(void)
{
    fs_dataset d = {K, E, 2, malloc(sizeof(float) * K * E * 2)};
    for (int k = 0; k < K; k++)
        for (int e = 0; e < E; e++) {
            d.feat[(k * E + e) * 2] = (float)k;
            d.feat[(k * E + e) * 2 + 1] = (float)e;
        }
    return d;
}

static fs_data_config data_cfg(int relabel)
{
    return (fs_data_config){
        .type = FS_DATA_FILE, .class_split = {20, 5, 5}, .exemplar_split = {2, 2, 1},
        .fs_relabel = relabel, .fs_relabel_split = {8, 2, 0}, .fs_relabel_split_seed = 20,
    };
}

static fs_seq_spec spec(int ctx, int b, bool distract)
{
    return (fs_seq_spec){.classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN, .context_len = ctx,
                         .burstiness = b, .distract = distract, .relabel = FS_NO_RELABEL};
}

/* One sampled sequence, decoded. */
typedef struct {
    int P;
    float x[MAXP * 2];
    int label[MAXP], type[MAXP], cls[MAXP], ex[MAXP];
} seq;

static void draw(const fs_task *t, const fs_seq_spec *s, uint64_t seed, uint64_t index, seq *q)
{
    static _Alignas(16) char scratch[1 << 14];
    cr_assert_leq(fs_seq_scratch_bytes(s->context_len), sizeof scratch);
    memset(q, 0, sizeof *q);
    q->P = s->context_len + 1;
    fs_sample_sequence(t, s, seed, 3, index, q->x, q->label, q->type, scratch);
    for (int i = 0; i < q->P; i++) {
        q->cls[i] = (int)lrintf(q->x[2 * i]);
        q->ex[i] = (int)lrintf(q->x[2 * i + 1]);
    }
}

static fs_dataset data;
static fs_task task;

static void setup_task(int relabel)
{
    data = labelled_dataset();
    fs_data_config cfg = data_cfg(relabel);
    fs_error err = {{0}};
    cr_assert_eq(fs_task_init(&task, &data, &cfg, "test.json", &err), 0, "%s", err.msg);
}
static void setup_plain(void) { setup_task(0); }
static void setup_relabel(void) { setup_task(5); }
static void teardown(void)
{
    fs_task_free(&task);
    free(data.feat);
}

Test(sampler, task_splits_and_num_classes, .init = setup_plain, .fini = teardown)
{
    cr_expect_eq(task.classes[FS_SPLIT_TRAIN].start, 0);
    cr_expect_eq(task.classes[FS_SPLIT_TRAIN].count, 20);
    cr_expect_eq(task.classes[FS_SPLIT_VAL].start, 20);
    cr_expect_eq(task.classes[FS_SPLIT_VAL].count, 5);
    cr_expect_eq(task.classes[FS_SPLIT_TEST].start, 25);
    cr_expect_eq(task.classes[FS_SPLIT_TEST].count, 5);
    cr_expect_eq(task.classes[FS_SPLIT_ALL].count, 30);
    cr_expect_eq(task.exemplars[FS_SPLIT_VAL].start, 2);
    cr_expect_eq(task.exemplars[FS_SPLIT_TEST].start, 4);
    cr_expect_eq(task.exemplars[FS_SPLIT_ALL].count, 5);
    cr_expect_eq(task.num_classes, 20, "no relabelling: the number of train classes");

    fs_task t2;
    fs_error err = {{0}};
    fs_data_config cfg = data_cfg(5);
    cr_assert_eq(fs_task_init(&t2, &data, &cfg, "test.json", &err), 0, "%s", err.msg);
    cr_expect_eq(t2.num_classes, 5, "relabelling: L");
    fs_task_free(&t2);

    cfg.class_split[2] = 4;
    cr_expect_eq(fs_task_init(&t2, &data, &cfg, "test.json", &err), -1);
    cr_expect(strstr(err.msg, "test.json") && strstr(err.msg, "data.class_split") && strstr(err.msg, "30"), "%s",
              err.msg);
    cfg = data_cfg(0);
    cfg.exemplar_split[0] = 3;
    cr_expect_eq(fs_task_init(&t2, &data, &cfg, "test.json", &err), -1);
    cr_expect(strstr(err.msg, "data.exemplar_split") != NULL, "%s", err.msg);
    cfg = data_cfg(1);
    cr_expect_eq(fs_task_init(&t2, &data, &cfg, "test.json", &err), -1);
    cr_expect(strstr(err.msg, "data.fs_relabel") != NULL, "%s", err.msg);
}

static int pair_index(fs_label_pair p, int L)
{
    cr_assert(p.first >= 0 && p.first < p.second && p.second < L, "bad pair (%d,%d)", p.first, p.second);
    return p.first * L + p.second;
}

static void check_relabel_split(int L, double tr, double va, double te, int64_t seed, int want_train, int want_val,
                                int want_test)
{
    fs_dataset d = labelled_dataset();
    fs_data_config cfg = data_cfg(L);
    cfg.fs_relabel_split[0] = tr, cfg.fs_relabel_split[1] = va, cfg.fs_relabel_split[2] = te;
    cfg.fs_relabel_split_seed = seed;
    fs_task t;
    fs_error err = {{0}};
    cr_assert_eq(fs_task_init(&t, &d, &cfg, "test.json", &err), 0, "%s", err.msg);
    cr_expect_eq(t.num_pairs[FS_SPLIT_TRAIN], want_train);
    cr_expect_eq(t.num_pairs[FS_SPLIT_VAL], want_val);
    cr_expect_eq(t.num_pairs[FS_SPLIT_TEST], want_test);
    int *seen = calloc((size_t)L * L, sizeof(int)), *label_in_train = calloc((size_t)L, sizeof(int));
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < t.num_pairs[s]; i++) {
            fs_label_pair p = t.pairs[s][i];
            seen[pair_index(p, L)]++;
            if (s == FS_SPLIT_TRAIN)
                label_in_train[p.first] = label_in_train[p.second] = 1;
        }
    for (int a = 0; a < L; a++) {
        cr_expect(label_in_train[a], "label %d missing from the train pairs", a);
        for (int b = a + 1; b < L; b++)
            cr_expect_eq(seen[a * L + b], 1, "pair (%d,%d) appears %d times over the splits", a, b, seen[a * L + b]);
    }
    free(seen), free(label_in_train);
    fs_task_free(&t);
    free(d.feat);
}

Test(sampler, relabel_splits_disjoint_complete_every_label_in_train)
{
    check_relabel_split(5, 8, 2, 0, 20, 8, 2, 0);   /* the main run: 10 pairs */
    check_relabel_split(5, 8, 2, 0, 7, 8, 2, 0);
    check_relabel_split(10, 36, 9, 0, 20, 36, 9, 0);
    check_relabel_split(15, 84, 21, 0, 20, 84, 21, 0);
    check_relabel_split(5, 6, 2, 2, 3, 6, 2, 2);
    check_relabel_split(5, 1, 1, 1, 3, 4, 3, 3);    /* floor(10/3) each to test, val; the rest to train */
    check_relabel_split(5, 0, 0, 0, 3, 10, 0, 0);   /* no split given: every pair trains */
    check_relabel_split(2, 8, 2, 0, 20, 1, 0, 0);

    /* Only 2 train pairs can never cover 5 labels. */
    fs_dataset d = labelled_dataset();
    fs_data_config cfg = data_cfg(5);
    cfg.fs_relabel_split[0] = 2, cfg.fs_relabel_split[1] = 8;
    fs_task t;
    fs_error err = {{0}};
    cr_expect_eq(fs_task_init(&t, &d, &cfg, "test.json", &err), -1);
    cr_expect(strstr(err.msg, "data.fs_relabel_split") != NULL, "%s", err.msg);
    free(d.feat);
}

Test(sampler, relabel_split_depends_on_its_seed)
{
    fs_dataset d = labelled_dataset();
    fs_data_config cfg = data_cfg(5);
    fs_task a, b;
    fs_error err = {{0}};
    cr_assert_eq(fs_task_init(&a, &d, &cfg, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(fs_task_init(&b, &d, &cfg, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(memcmp(a.pair_storage, b.pair_storage, 10 * sizeof(fs_label_pair)), 0, "same seed, same split");
    fs_task_free(&b);
    int differs = 0;
    for (int s = 21; s < 26; s++) {
        cfg.fs_relabel_split_seed = s;
        cr_assert_eq(fs_task_init(&b, &d, &cfg, NULL, &err), 0, "%s", err.msg);
        differs += memcmp(a.pairs[FS_SPLIT_VAL], b.pairs[FS_SPLIT_VAL], 2 * sizeof(fs_label_pair)) != 0;
        fs_task_free(&b);
    }
    cr_expect_gt(differs, 0, "the val pairs never changed with the seed");
    fs_task_free(&a);
    free(d.feat);
}

Test(sampler, burst_and_distractor_counts, .init = setup_plain, .fini = teardown)
{
    const int cases[][3] = {{2, 1, 1}, {8, 2, 1}, {8, 3, 0}, {9, 4, 1}, {6, 0, 1}, {5, 5, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fs_seq_spec s = spec(cases[c][0], cases[c][1], cases[c][2]);
        fs_error err = {{0}};
        cr_assert_eq(fs_seq_spec_check(&task, &s, "case", &err), 0, "%s", err.msg);
        int b = s.burstiness, with_d = b > 0 && s.distract;
        for (int n = 0; n < 500; n++) {
            seq q;
            draw(&task, &s, 11, (uint64_t)n, &q);
            int counts[4] = {0}, qc = q.cls[q.P - 1], dc = -1;
            cr_assert_eq(q.type[q.P - 1], FS_ITEM_QUERY);
            for (int i = 0; i < q.P - 1; i++) {
                counts[q.type[i]]++;
                if (q.type[i] == FS_ITEM_BURSTY)
                    cr_assert_eq(q.cls[i], qc, "bursty items are the query class");
                if (q.type[i] == FS_ITEM_DISTRACTOR) {
                    cr_assert_neq(q.cls[i], qc, "the distractor is not the query class");
                    cr_assert(dc < 0 || dc == q.cls[i], "one distractor class");
                    dc = q.cls[i];
                }
                cr_assert_eq(q.label[i], q.cls[i], "labels are class indices without relabelling");
            }
            cr_assert_eq(counts[FS_ITEM_QUERY], 0);
            cr_assert_eq(counts[FS_ITEM_BURSTY], b);
            cr_assert_eq(counts[FS_ITEM_DISTRACTOR], with_d ? b : 0);
            cr_assert_eq(counts[FS_ITEM_OTHER], s.context_len - b - (with_d ? b : 0));
        }
    }
}

Test(sampler, bursts_are_shuffled_over_positions, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(4, 1, true);
    int at[4] = {0};
    for (int n = 0; n < 4000; n++) {
        seq q;
        draw(&task, &s, 12, (uint64_t)n, &q);
        for (int i = 0; i < 4; i++)
            at[i] += q.type[i] == FS_ITEM_BURSTY;
    }
    for (int i = 0; i < 4; i++) /* expect 1000 each, sd ~27 */
        cr_expect(abs(at[i] - 1000) < 150, "bursty item at position %d in %d of 4000", i, at[i]);
}

Test(sampler, no_support_keeps_query_out_of_context, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(8, 0, true);
    s.no_support = true;
    int with_support = 0;
    for (int n = 0; n < 2000; n++) {
        seq q;
        draw(&task, &s, 13, (uint64_t)n, &q);
        for (int i = 0; i < q.P - 1; i++)
            cr_assert_neq(q.cls[i], q.cls[q.P - 1], "query class in context under no_support");
    }
    s = spec(8, 2, true);
    s.no_support = true;
    for (int n = 0; n < 2000; n++) {
        seq q;
        draw(&task, &s, 13, (uint64_t)n, &q);
        int d = -1;
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] == FS_ITEM_DISTRACTOR)
                d = q.cls[i];
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] == FS_ITEM_OTHER)
                cr_assert(q.cls[i] != q.cls[q.P - 1] && q.cls[i] != d, "query/distractor class among the rest");
    }
    /* Control: without no_support the query class does show up in the rest. */
    s = spec(8, 0, true);
    for (int n = 0; n < 2000; n++) {
        seq q;
        draw(&task, &s, 13, (uint64_t)n, &q);
        for (int i = 0; i < q.P - 1; i++)
            with_support += q.cls[i] == q.cls[q.P - 1];
    }
    cr_expect_gt(with_support, 400, "expected ~800 query-class items, got %d", with_support);
}

Test(sampler, unique_rest_items_are_distinct, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(18, 1, true); /* 16 distinct others among 18 remaining classes */
    s.unique_rest = true;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_spec_check(&task, &s, "unique", &err), 0, "%s", err.msg);
    for (int n = 0; n < 1000; n++) {
        seq q;
        draw(&task, &s, 14, (uint64_t)n, &q);
        int used[K] = {0};
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] == FS_ITEM_OTHER)
                cr_assert_eq(used[q.cls[i]]++, 0, "class %d twice among the rest", q.cls[i]);
        cr_assert_eq(used[q.cls[q.P - 1]], 0, "query class among the unique rest");
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] == FS_ITEM_DISTRACTOR)
                cr_assert_eq(used[q.cls[i]], 0, "distractor class among the unique rest");
    }
    s.context_len = 20; /* 18 others needed, 18 available; 21 would be too many */
    cr_expect_eq(fs_seq_spec_check(&task, &s, "unique", &err), 0, "%s", err.msg);
    s.context_len = 21;
    cr_expect_eq(fs_seq_spec_check(&task, &s, "unique", &err), -1);
    cr_expect(strstr(err.msg, "unique_rest") != NULL, "%s", err.msg);
}

static double chi2(const double *counts, const double *expected, int n)
{
    double c = 0;
    for (int i = 0; i < n; i++)
        c += (counts[i] - expected[i]) * (counts[i] - expected[i]) / expected[i];
    return c;
}

Test(sampler, uniform_class_frequencies, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(4, 1, true);
    double query[20] = {0}, other[20] = {0}, exp_q[20], exp_o[20];
    const int N = 20000;
    for (int n = 0; n < N; n++) {
        seq q;
        draw(&task, &s, 15, (uint64_t)n, &q);
        query[q.cls[q.P - 1]]++;
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] == FS_ITEM_OTHER)
                other[q.cls[i]]++;
    }
    for (int i = 0; i < 20; i++)
        exp_q[i] = N / 20.0, exp_o[i] = 2.0 * N / 20.0;
    /* 19 degrees of freedom: p = 1e-4 at 47.4. */
    cr_expect_lt(chi2(query, exp_q, 20), 47.4, "query classes chi2 %g", chi2(query, exp_q, 20));
    cr_expect_lt(chi2(other, exp_o, 20), 47.4, "other classes chi2 %g", chi2(other, exp_o, 20));
}

Test(sampler, zipf_class_frequencies)
{
    fs_dataset d = labelled_dataset();
    fs_data_config cfg = data_cfg(0);
    cfg.zipf_alpha = 1.0;
    fs_task t;
    fs_error err = {{0}};
    cr_assert_eq(fs_task_init(&t, &d, &cfg, NULL, &err), 0, "%s", err.msg);
    fs_train_config train = {.train_context_len = 4, .num_samplers = 1,
                             .samplers = {{.mixing_coeff = 1, .burstiness = 1, .distract = true}}};
    fs_seq_spec s;
    cr_assert_eq(fs_seq_spec_from_sampler(&s, &t, &train, 0, NULL, &err), 0, "%s", err.msg);
    cr_assert(s.zipf);
    double p[20], z = 0;
    for (int i = 0; i < 20; i++)
        z += p[i] = 1.0 / (i + 1);
    for (int i = 0; i < 20; i++)
        p[i] /= z;
    const int N = 40000;
    double query[20] = {0}, distr[20] = {0}, other[20] = {0}, eq[20], ed[20], eo[20];
    for (int n = 0; n < N; n++) {
        seq q;
        draw(&t, &s, 16, (uint64_t)n, &q);
        query[q.cls[q.P - 1]]++;
        for (int i = 0; i < q.P - 1; i++) {
            if (q.type[i] == FS_ITEM_DISTRACTOR)
                distr[q.cls[i]]++;
            if (q.type[i] == FS_ITEM_OTHER)
                other[q.cls[i]]++;
        }
    }
    /* The distractor: Zipf renormalised without the query, sum_q p_q p_j / (1 - p_q). */
    for (int j = 0; j < 20; j++) {
        eq[j] = N * p[j], eo[j] = 2.0 * N * p[j], ed[j] = 0;
        for (int q = 0; q < 20; q++)
            if (q != j)
                ed[j] += N * p[q] * p[j] / (1 - p[q]);
    }
    cr_expect_lt(chi2(query, eq, 20), 47.4, "query chi2 %g", chi2(query, eq, 20));
    cr_expect_lt(chi2(distr, ed, 20), 47.4, "distractor chi2 %g", chi2(distr, ed, 20));
    cr_expect_lt(chi2(other, eo, 20), 47.4, "other chi2 %g", chi2(other, eo, 20));
    /* And it is not uniform: class 0 is drawn ~ 3.6x as often as uniform would. */
    cr_expect_gt(query[0], 2.5 * N / 20);

    /* Evaluators stay uniform even with zipf_alpha. */
    fs_evaluator_config ev = {.name = "e", .classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN,
                              .burstiness = 1, .distract = true, .fs_relabel_scheme = FS_SPLIT_NONE};
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &t, &ev, 4, NULL, &err), 0, "%s", err.msg);
    cr_expect(!s.zipf);
    fs_task_free(&t);
    free(d.feat);
}

Test(sampler, zipf_no_support_and_unique_rest)
{
    fs_dataset d = labelled_dataset();
    fs_data_config cfg = data_cfg(0);
    cfg.zipf_alpha = 2.0; /* class 0 holds ~62% of the mass */
    fs_task t;
    fs_error err = {{0}};
    cr_assert_eq(fs_task_init(&t, &d, &cfg, NULL, &err), 0, "%s", err.msg);
    fs_seq_spec s = spec(10, 1, true);
    s.zipf = true, s.unique_rest = true;
    cr_assert_eq(fs_seq_spec_check(&t, &s, "zipf", &err), 0, "%s", err.msg);
    for (int n = 0; n < 2000; n++) {
        seq q;
        draw(&t, &s, 17, (uint64_t)n, &q);
        int used[K] = {0};
        used[q.cls[q.P - 1]] = 1;
        for (int i = 0; i < q.P - 1; i++)
            if (q.type[i] != FS_ITEM_BURSTY)
                cr_assert_eq(used[q.cls[i]]++, 0, "class %d repeated", q.cls[i]);
    }
    fs_task_free(&t);
    free(d.feat);
}

Test(sampler, exemplars_stay_in_their_split, .init = setup_plain, .fini = teardown)
{
    const fs_split splits[] = {FS_SPLIT_TRAIN, FS_SPLIT_VAL, FS_SPLIT_TEST, FS_SPLIT_ALL};
    for (int k = 0; k < 4; k++) {
        fs_seq_spec s = spec(4, 1, true);
        s.exemplars = splits[k];
        fs_range r = task.exemplars[splits[k]];
        int hits[E] = {0};
        for (int n = 0; n < 2000; n++) {
            seq q;
            draw(&task, &s, 18, (uint64_t)n, &q);
            for (int i = 0; i < q.P; i++) {
                cr_assert(q.ex[i] >= r.start && q.ex[i] < r.start + r.count, "exemplar %d outside split %s",
                          q.ex[i], fs_split_name(splits[k]));
                cr_assert(q.cls[i] >= 0 && q.cls[i] < 20, "class %d outside the train classes", q.cls[i]);
                hits[q.ex[i]]++;
            }
        }
        for (int e = r.start; e < r.start + r.count; e++) /* 10000 draws over r.count exemplars */
            cr_expect(fabs(hits[e] - 10000.0 / r.count) < 400, "exemplar %d drawn %d times", e, hits[e]);
    }
}

Test(sampler, evaluator_classes_and_all_exemplars_for_test_classes, .init = setup_plain, .fini = teardown)
{
    fs_evaluator_config ev = {.name = "test_classes", .classes = FS_SPLIT_TEST, .exemplars = FS_SPLIT_TRAIN,
                              .burstiness = 1, .distract = true, .fs_relabel_scheme = FS_SPLIT_TRAIN};
    fs_seq_spec s;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, "test.json", &err), 0, "%s", err.msg);
    cr_expect_eq(s.exemplars, FS_SPLIT_ALL, "non-train classes use all exemplars");
    cr_expect_eq(s.context_len, 2, "context_len 0 = train_context_len");
    cr_expect_eq(s.relabel, FS_NO_RELABEL, "no relabelling without data.fs_relabel");
    int ex_seen[E] = {0};
    for (int n = 0; n < 500; n++) {
        seq q;
        draw(&task, &s, 19, (uint64_t)n, &q);
        for (int i = 0; i < q.P; i++) {
            cr_assert(q.cls[i] >= 25 && q.cls[i] < 30, "class %d outside the test split", q.cls[i]);
            cr_assert_eq(q.label[i], q.cls[i], "labels are dataset class indices (>= num_classes here)");
            ex_seen[q.ex[i]] = 1;
        }
    }
    for (int e = 0; e < E; e++)
        cr_expect(ex_seen[e], "exemplar %d never used", e);
    ev.classes = FS_SPLIT_TRAIN, ev.exemplars = FS_SPLIT_VAL, ev.context_len = 6;
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, "test.json", &err), 0, "%s", err.msg);
    cr_expect_eq(s.exemplars, FS_SPLIT_VAL);
    cr_expect_eq(s.context_len, 6);
    ev.burstiness = 4;
    cr_expect_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, "test.json", &err), -1);
    cr_expect(strstr(err.msg, "test.json") && strstr(err.msg, "test_classes") && strstr(err.msg, "burstiness"),
              "%s", err.msg);
}

Test(sampler, match_query_and_distractors_share_exemplars, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(6, 2, true);
    s.exemplars = FS_SPLIT_ALL;
    s.match_query_and_distractors = true;
    int differing_other = 0;
    for (int n = 0; n < 500; n++) {
        seq q;
        draw(&task, &s, 20, (uint64_t)n, &q);
        int qe = q.ex[q.P - 1], de = -1;
        for (int i = 0; i < q.P - 1; i++) {
            if (q.type[i] == FS_ITEM_BURSTY)
                cr_assert_eq(q.ex[i], qe);
            if (q.type[i] == FS_ITEM_DISTRACTOR) {
                cr_assert(de < 0 || q.ex[i] == de);
                de = q.ex[i];
            }
            if (q.type[i] == FS_ITEM_OTHER)
                differing_other += q.ex[i] != qe;
        }
    }
    cr_expect_gt(differing_other, 500, "other items draw their own exemplars");
}

Test(sampler, relabelling_assigns_pair_labels, .init = setup_relabel, .fini = teardown)
{
    fs_train_config train = {.train_context_len = 6, .num_samplers = 1,
                             .samplers = {{.mixing_coeff = 1, .burstiness = 2, .distract = true}}};
    fs_seq_spec s;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_spec_from_sampler(&s, &task, &train, 0, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(s.relabel, FS_SPLIT_TRAIN);
    for (int set = FS_SPLIT_TRAIN; set <= FS_SPLIT_VAL; set++) {
        s.relabel = set;
        int in_set[25] = {0}, order[2] = {0};
        for (int i = 0; i < task.num_pairs[set]; i++)
            in_set[pair_index(task.pairs[set][i], 5)] = 1;
        for (int n = 0; n < 2000; n++) {
            seq q;
            draw(&task, &s, 21, (uint64_t)n, &q);
            int first = q.label[q.P - 1], second = -1;
            for (int i = 0; i < q.P - 1; i++) {
                if (q.type[i] == FS_ITEM_BURSTY)
                    cr_assert_eq(q.label[i], first, "bursty items share the query's label");
                else if (q.type[i] == FS_ITEM_DISTRACTOR)
                    second = q.label[i];
                else
                    cr_assert_eq(q.label[i], q.cls[i], "other items keep their class index");
            }
            cr_assert(first != second && first >= 0 && first < 5 && second >= 0 && second < 5);
            int a = first < second ? first : second, b = first ^ second ^ a;
            cr_assert(in_set[a * 5 + b], "pair (%d,%d) not in the %s set", a, b, fs_split_name((fs_split)set));
            order[first < second]++;
        }
        cr_expect(abs(order[0] - 1000) < 150, "pair order not random: %d vs %d", order[0], order[1]);
    }
    s.relabel = FS_SPLIT_TEST; /* split 8 2 0: no test pairs */
    cr_expect_eq(fs_seq_spec_check(&task, &s, "eval", &err), -1);
    cr_expect(strstr(err.msg, "fs_relabel_scheme") != NULL, "%s", err.msg);
}

Test(sampler, evaluator_relabel_schemes, .init = setup_relabel, .fini = teardown)
{
    fs_evaluator_config ev = {.name = "e", .classes = FS_SPLIT_TRAIN, .exemplars = FS_SPLIT_TRAIN,
                              .burstiness = 1, .distract = true, .fs_relabel_scheme = FS_SPLIT_VAL};
    fs_seq_spec s;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(s.relabel, FS_SPLIT_VAL);
    ev.fs_relabel_scheme = FS_SPLIT_ALL; /* every label pair */
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(s.relabel, FS_SPLIT_ALL);
    ev.fs_relabel_scheme = FS_SPLIT_NONE; /* the reference's "None": no relabelling */
    cr_assert_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, NULL, &err), 0, "%s", err.msg);
    cr_expect_eq(s.relabel, FS_NO_RELABEL);
    ev.fs_relabel_scheme = FS_SPLIT_TEST;
    cr_expect_eq(fs_seq_spec_from_evaluator(&s, &task, &ev, 2, "run.json", &err), -1);
    cr_expect(strstr(err.msg, "run.json") && strstr(err.msg, "\"e\"") && strstr(err.msg, "test"), "%s", err.msg);
}

Test(sampler, assign_query_label_random, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(4, 0, true);
    s.no_support = true, s.assign_query_label_random = true;
    int at[4] = {0};
    for (int n = 0; n < 4000; n++) {
        seq q;
        draw(&task, &s, 22, (uint64_t)n, &q);
        int moved = -1;
        for (int i = 0; i < q.P - 1; i++) {
            if (q.label[i] != q.cls[i]) {
                cr_assert_lt(moved, 0, "more than one label changed");
                cr_assert_eq(q.label[i], q.label[q.P - 1], "the changed label is the query's");
                moved = i;
            }
        }
        cr_assert_geq(moved, 0, "no context label took the query label");
        cr_assert_eq(q.label[q.P - 1], q.cls[q.P - 1]);
        at[moved]++;
    }
    for (int i = 0; i < 4; i++)
        cr_expect(abs(at[i] - 1000) < 150, "position %d chosen %d times", i, at[i]);
}

Test(sampler, noise_is_gaussian_with_the_given_scale, .init = setup_plain, .fini = teardown)
{
    fs_seq_spec s = spec(4, 1, true);
    s.noise_scale = 0.05;
    double m1 = 0, m2 = 0;
    int count = 0;
    for (int n = 0; n < 2000; n++) {
        seq q;
        draw(&task, &s, 23, (uint64_t)n, &q);
        for (int i = 0; i < 2 * q.P; i++) {
            double r = q.x[i] - rint(q.x[i]); /* rows hold integers; |noise| < 0.5 */
            m1 += r, m2 += r * r, count++;
        }
    }
    m1 /= count, m2 /= count;
    cr_expect(fabs(m1) < 0.0015, "noise mean %g", m1); /* sd of the mean 2.5e-4 */
    cr_expect(fabs(sqrt(m2) - 0.05) < 0.0015, "noise sd %g", sqrt(m2));
}

Test(sampler, sequences_depend_only_on_seed_stream_index, .init = setup_relabel, .fini = teardown)
{
    fs_seq_spec s = spec(8, 2, true);
    s.relabel = FS_SPLIT_TRAIN, s.noise_scale = 0.01;
    seq a, b;
    draw(&task, &s, 30, 12345, &a);
    draw(&task, &s, 31, 7, &b); /* unrelated draw in between */
    draw(&task, &s, 30, 12345, &b);
    cr_expect_eq(memcmp(&a, &b, sizeof a), 0, "same (seed, index), same sequence");
    int diff_index = 0, diff_seed = 0, diff_stream = 0;
    char scratch[4096];
    for (int n = 0; n < 20; n++) {
        draw(&task, &s, 30, 1000 + n, &a);
        draw(&task, &s, 30, 2000 + n, &b);
        diff_index += memcmp(a.x, b.x, sizeof a.x) != 0;
        draw(&task, &s, 32, 1000 + n, &b);
        diff_seed += memcmp(a.x, b.x, sizeof a.x) != 0;
        fs_sample_sequence(&task, &s, 30, 4, 1000 + n, b.x, b.label, b.type, scratch);
        diff_stream += memcmp(a.x, b.x, sizeof a.x) != 0;
    }
    cr_expect_eq(diff_index, 20);
    cr_expect_eq(diff_seed, 20);
    cr_expect_eq(diff_stream, 20);
}

Test(sampler, batches_equal_single_sequences_in_any_split, .init = setup_relabel, .fini = teardown)
{
    fs_train_config train = {.train_context_len = 6, .num_samplers = 2,
                             .samplers = {{.mixing_coeff = 1, .burstiness = 1, .distract = true},
                                          {.mixing_coeff = 3, .burstiness = 3, .distract = true}}};
    fs_seq_mix mix;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_mix_from_train(&mix, &task, &train, NULL, &err), 0, "%s", err.msg);
    enum { B = 64, P = 7 };
    float *x = malloc(sizeof(float) * B * P * 2), *y = malloc(sizeof(float) * B * P * 2);
    int lx[B * P], ly[B * P], tx[B * P], ty[B * P];
    cr_assert_eq(fs_sample_batch(&task, &mix, 5, FS_STREAM_TRAIN, 320, B, x, lx, tx, &err), 0, "%s", err.msg);
    /* Two half batches (as a resumed run would draw them), then sequence by sequence. */
    cr_assert_eq(fs_sample_batch(&task, &mix, 5, FS_STREAM_TRAIN, 320, B / 2, y, ly, ty, &err), 0);
    cr_assert_eq(fs_sample_batch(&task, &mix, 5, FS_STREAM_TRAIN, 320 + B / 2, B / 2, y + B / 2 * P * 2,
                                 ly + B / 2 * P, ty + B / 2 * P, &err), 0);
    cr_expect_eq(memcmp(x, y, sizeof(float) * B * P * 2), 0);
    cr_expect_eq(memcmp(lx, ly, sizeof lx), 0);
    cr_expect_eq(memcmp(tx, ty, sizeof tx), 0);
    char scratch[4096];
    for (int i = 0; i < B; i++) {
        fs_sample_mixed(&task, &mix, 5, FS_STREAM_TRAIN, 320 + i, y, ly, ty, scratch);
        cr_assert_eq(memcmp(x + i * P * 2, y, sizeof(float) * P * 2), 0, "sequence %d", i);
        cr_assert_eq(memcmp(lx + i * P, ly, sizeof(int) * P), 0);
    }
    free(x), free(y);
}

Test(sampler, mixing_follows_coefficients, .init = setup_plain, .fini = teardown)
{
    fs_train_config train = {.train_context_len = 6, .num_samplers = 3,
                             .samplers = {{.mixing_coeff = 1, .burstiness = 1, .distract = true},
                                          {.mixing_coeff = 0, .burstiness = 2, .distract = true},
                                          {.mixing_coeff = 3, .burstiness = 3, .distract = true}}};
    fs_seq_mix mix;
    fs_error err = {{0}};
    cr_assert_eq(fs_seq_mix_from_train(&mix, &task, &train, NULL, &err), 0, "%s", err.msg);
    int by_burst[4] = {0};
    char scratch[4096];
    for (int n = 0; n < 8000; n++) {
        float x[7 * 2];
        int l[7], ty[7], bursty = 0;
        fs_sample_mixed(&task, &mix, 9, FS_STREAM_TRAIN, (uint64_t)n, x, l, ty, scratch);
        for (int i = 0; i < 6; i++)
            bursty += ty[i] == FS_ITEM_BURSTY;
        cr_assert_eq(bursty, mix.specs[fs_seq_mix_pick(&mix, 9, FS_STREAM_TRAIN, (uint64_t)n)].burstiness);
        by_burst[bursty]++;
    }
    cr_expect_eq(by_burst[2], 0, "a zero mixing coefficient is never used");
    cr_expect(abs(by_burst[1] - 2000) < 200, "sampler 0 used %d of 8000 times (expected 2000)", by_burst[1]);

    train.samplers[0].mixing_coeff = train.samplers[2].mixing_coeff = 0;
    cr_expect_eq(fs_seq_mix_from_train(&mix, &task, &train, "run.json", &err), -1);
    cr_expect(strstr(err.msg, "mixing_coeff") != NULL, "%s", err.msg);
    train.samplers[0].mixing_coeff = 1, train.samplers[2].burstiness = 4;
    cr_expect_eq(fs_seq_mix_from_train(&mix, &task, &train, "run.json", &err), -1);
    cr_expect(strstr(err.msg, "train.samplers[2]") && strstr(err.msg, "burstiness"), "%s", err.msg);
}

Test(sampler, eval_sets_on_the_default_evaluators)
{
    fs_dataset d;
    fs_error err = {{0}};
    cr_assert_eq(fs_dataset_synth(&d, 150, 5, 8, 0.5, 0, &err), 0, "%s", err.msg);
    fs_run_config rc;
    fs_run_config_default(&rc);
    rc.data.class_split[0] = 50, rc.data.class_split[1] = 80, rc.data.class_split[2] = 20;
    rc.eval.eval_iters = 300;
    fs_task t;
    cr_assert_eq(fs_task_init(&t, &d, &rc.data, "run.json", &err), 0, "%s", err.msg);
    cr_expect_eq(t.num_classes, 5);
    for (int e = 0; e < rc.eval.num_evaluators; e++) {
        fs_eval_set a, b;
        cr_assert_eq(fs_eval_set_build(&a, &t, &rc.eval, e, rc.train.train_context_len, "run.json", &err), 0,
                     "%s", err.msg);
        cr_assert_eq(fs_eval_set_build(&b, &t, &rc.eval, e, rc.train.train_context_len, "run.json", &err), 0);
        cr_expect_str_eq(a.name, rc.eval.evaluators[e].name);
        cr_expect_eq(a.n, 300);
        cr_expect_eq(a.P, 3);
        cr_expect_eq(a.D, 8);
        size_t items = (size_t)a.n * a.P;
        cr_expect_eq(memcmp(a.examples, b.examples, items * a.D * sizeof(float)), 0, "eval sets are fixed");
        cr_expect_eq(memcmp(a.labels, b.labels, items * sizeof(int)), 0);
        for (size_t i = 0; i < items; i++)
            cr_assert(a.labels[i] >= 0 && a.labels[i] < 5, "label %d: relabelled to 0..4", a.labels[i]);
        if (e > 0) {
            fs_eval_set prev;
            cr_assert_eq(fs_eval_set_build(&prev, &t, &rc.eval, e - 1, 2, NULL, &err), 0);
            cr_expect_neq(memcmp(a.examples, prev.examples, items * a.D * sizeof(float)), 0);
            fs_eval_set_free(&prev);
        }
        fs_eval_set_free(&a), fs_eval_set_free(&b);
    }
    cr_expect_eq(fs_eval_set_build(&(fs_eval_set){0}, &t, &rc.eval, 9, 2, "run.json", &err), -1);
    fs_task_free(&t);
    fs_dataset_free(&d);
    fs_run_config_free(&rc);
}
