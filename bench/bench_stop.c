/* bench_stop: the stop rules offline, on a model's test CS-profile: for each rule and
 * setting, the accuracy, the mean compute (MFLOP) and time (ms, from the ET-profile) per
 * request, and the share of requests that reach the edge and the cloud, next to the same
 * figures with no rule (every branch, and the final exit only) computed in the same run.
 * What the live cluster should measure (bench/bench_serving.sh); docs/elastic.md. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ei.h"
#include "nn/model.h"
#include "planner/predictor.h"
#include "planner/profile.h"
#include "planner/stop.h"
#include "wire/wire.h"

#define DIR "models/fmnist-8exit.profile"

static const char usage_text[] =
    "usage: bench_stop [--model F] [--cs F] [--et F] [--predictor F] [--edge K] [--cloud K]\n"
    "                  [RULE...]\n"
    "Simulates each stop RULE (none, confidence:T, entropy:T, einet:A; default: a sweep of\n"
    "each) on the test CS-profile, every branch running until the rule fires, and prints\n"
    "accuracy, mean MFLOP, mean ET-profile time and the share reaching the edge (first block\n"
    "K, default 3) and the cloud (default 6). Defaults: the shipped model and " DIR ".\n";

typedef struct sim {
    const profile_cs_t *cs;
    predictor_t *pred;
    int n, K, edge, cloud;
    double conv_mf[PLANNER_MAX_EXITS], branch_mf[PLANNER_MAX_EXITS];
    double conv_ms[PLANNER_MAX_EXITS], branch_ms[PLANNER_MAX_EXITS];
} sim_t;

typedef struct row {
    double acc, mflop, ms, edge, cloud;
} row_t;

/* Sample i under rule, as a node runs it: the exit it stops at (n: none fired); ran[j] = 1
 * for the branches that ran. Threshold rules run every branch; einet's runs branch 1, then
 * the branches its predictor gives a chance to fire (stop.h). */
static int stop_at(sim_t *s, const einet_StopRule *r, int i, uint8_t *ran)
{
    const float *p = profile_cs_probs(s->cs, i);
    double scores[PLANNER_MAX_EXITS];
    uint8_t executed[PLANNER_MAX_EXITS] = {0};
    int einet = r->kind == einet_StopKind_STOP_EINET;
    for (int k = 1; k < s->n; k++) {
        ran[k - 1] = !einet || k == 1 || stop_einet_branch(r->threshold, scores[k - 1]);
        if (!ran[k - 1])
            continue;
        executed[k - 1] = 1;
        if (einet)
            predictor_predict(s->pred, p, executed, k, scores);
        if (stop_fires(r->kind, r->threshold, p + (size_t)(k - 1) * s->K, s->K,
                       einet ? scores[k - 1] : 0))
            return k;
    }
    ran[s->n - 1] = 1;
    return s->n;
}

static row_t run_rule(sim_t *s, const einet_StopRule *r, int final_only)
{
    row_t w = {0};
    int count = profile_cs_count(s->cs);
    uint8_t ran[PLANNER_MAX_EXITS];
    for (int i = 0; i < count; i++) {
        int k = s->n;
        if (final_only) {
            memset(ran, 0, sizeof ran);
            ran[s->n - 1] = 1;
        } else {
            k = stop_at(s, r, i, ran);
        }
        w.acc += profile_cs_correct(s->cs, i)[k - 1];
        for (int j = 1; j <= k; j++) {
            w.mflop += s->conv_mf[j - 1] + (ran[j - 1] ? s->branch_mf[j - 1] : 0);
            w.ms += s->conv_ms[j - 1] + (ran[j - 1] ? s->branch_ms[j - 1] : 0);
        }
        w.edge += k >= s->edge;
        w.cloud += k >= s->cloud;
    }
    w.acc /= count;
    w.mflop /= count;
    w.ms /= count;
    w.edge /= count;
    w.cloud /= count;
    return w;
}

static void print_row(const char *name, row_t w, row_t ref)
{
    printf("%-18s %8.4f %+8.2f %9.2f %6.1f%% %8.4f %6.1f%% %6.1f%% %6.1f%%\n", name, w.acc,
           100 * (w.acc - ref.acc), w.mflop, 100 * w.mflop / ref.mflop, w.ms,
           100 * w.ms / ref.ms, 100 * w.edge, 100 * w.cloud);
}

static const char *const sweep[] = {
    "confidence:0.9",  "confidence:0.95",  "confidence:0.98",  "confidence:0.99",
    "confidence:0.995", "entropy:0.3",     "entropy:0.2",      "entropy:0.15",
    "entropy:0.1",     "entropy:0.08",     "entropy:0.05",     "einet:0.9",
    "einet:0.93",      "einet:0.95",       "einet:0.97",       "einet:0.98",
    "einet:0.99",      "einet:0.995",      NULL};

static int load(sim_t *s, const char *model, const char *cs_path, const char *et_path,
                const char *pred_path, ei_err_t *err)
{
    nn_model_t *m = nn_model_load(model, 1, err);
    if (!m)
        return -1;
    s->n = nn_model_blocks(m);
    for (int k = 0; k < s->n && k < PLANNER_MAX_EXITS; k++) {
        s->conv_mf[k] = nn_model_conv_flops(m, k) / 1e6;
        s->branch_mf[k] = nn_model_branch_flops(m, k) / 1e6;
    }
    nn_model_destroy(&m);
    profile_et_t et;
    if (profile_et_load(et_path, &et, err) < 0)
        return -1;
    for (int k = 0; k < s->n; k++) {
        s->conv_ms[k] = et.times.conv_ms[k];
        s->branch_ms[k] = et.times.branch_ms[k];
    }
    s->cs = profile_cs_load(cs_path, err);
    s->pred = s->cs ? predictor_load(pred_path, err) : NULL;
    if (!s->pred)
        return -1;
    s->K = profile_cs_classes(s->cs);
    if (profile_cs_exits(s->cs) != s->n || predictor_exits(s->pred) != s->n)
        return ei_err_set(err, EI_E_SHAPE, "the profile, predictor and model disagree on exits");
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = "models/fmnist-8exit.safetensors", *cs = DIR "/cs-test.safetensors";
    const char *et = DIR "/et.json", *pred = DIR "/predictor-correctness.safetensors";
    sim_t s = {0};
    s.edge = 3;
    s.cloud = 6;
    static const struct option longopts[] = {
        {"model", 1, 0, 'm'}, {"cs", 1, 0, 'c'},    {"et", 1, 0, 'e'}, {"predictor", 1, 0, 'p'},
        {"edge", 1, 0, 'E'},  {"cloud", 1, 0, 'C'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'c': cs = optarg; break;
        case 'e': et = optarg; break;
        case 'p': pred = optarg; break;
        case 'E': s.edge = atoi(optarg); break;
        case 'C': s.cloud = atoi(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    ei_err_t err;
    if (load(&s, model, cs, et, pred, &err) < 0) {
        fprintf(stderr, "bench_stop: %s\n", err.msg);
        return 1;
    }
    einet_StopRule none = {0};
    row_t every = run_rule(&s, &none, 0), final = run_rule(&s, &none, 1);
    printf("%d test samples of %s; relative figures against the final exit only\n",
           profile_cs_count(s.cs), cs);
    printf("%-18s %8s %8s %9s %7s %8s %7s %7s %7s\n", "rule", "accuracy", "d points", "MFLOP",
           "of ref", "ET ms", "of ref", "edge", "cloud");
    print_row("final exit only", final, final);
    print_row("every branch", every, final);
    const char *const *rules = optind < argc ? (const char *const *)argv + optind : sweep;
    int nrules = optind < argc ? argc - optind : (int)(sizeof sweep / sizeof *sweep) - 1;
    for (int i = 0; i < nrules; i++) {
        einet_StopRule r;
        char why[160];
        if (wire_stop_parse(rules[i], &r, why, sizeof why) < 0) {
            fprintf(stderr, "bench_stop: %s\n", why);
            return 2;
        }
        print_row(rules[i], run_rule(&s, &r, 0), final);
    }
    profile_cs_destroy((profile_cs_t **)&s.cs);
    predictor_destroy(&s.pred);
    return 0;
}
