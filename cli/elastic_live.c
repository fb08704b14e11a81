/* einet elastic --live and einet profile --from-cluster (see elastic_live.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/client.h"
#include "cli/elastic_live.h"
#include "nn/dataset.h"

/* The live profile on an open client; *version gets its version. */
static int fetch_on(client_t *c, const char *endpoint, long timeout_ms, profile_et_t *et,
                    uint64_t *version, ei_err_t *err)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_stats_query_tag);
    env.body.stats_query.with_profile = true;
    int rc = client_call(c, &env, einet_Envelope_stats_reply_tag, (int)timeout_ms, err);
    if (rc)
        return rc;
    const einet_StatsReply *s = &env.body.stats_reply;
    if (!s->has_profile || s->profile.blocks_count < 1 ||
        s->profile.blocks_count > PLANNER_MAX_EXITS)
        return ei_err_set(err, EI_E_FORMAT,
                          "the coordinator at %s sent no live profile (an older version?)",
                          endpoint);
    int n = (int)s->profile.blocks_count;
    profile_et_init(et, n);
    snprintf(et->model, sizeof et->model, "live");
    for (int k = 0; k < n; k++) {
        const einet_BlockProfile *b = &s->profile.blocks[k];
        et->times.conv_ms[k] = b->c_ms;
        et->times.branch_ms[k] = b->b_ms;
        et->times.link_ms[k] = b->l_ms;
        et->times.result_ms[k] = b->r_ms;
    }
    et->dispatch_ms = s->profile.dispatch_ms > 0 ? s->profile.dispatch_ms : 0;
    if (version)
        *version = s->profile.version;
    rc = planner_profile_check(&et->times, err);
    return rc ? ei_err_prefix(err, "the live profile: ") : 0;
}

int live_profile_fetch(const char *endpoint, long timeout_ms, profile_et_t *et, ei_err_t *err)
{
    client_t *c = client_new(endpoint, err);
    if (!c)
        return err->code;
    int rc = fetch_on(c, endpoint, timeout_ms, et, NULL, err);
    client_destroy(&c);
    return rc;
}

/* Adds x's times into sum (count-weighted mean taken later). */
static void profile_add(profile_et_t *sum, const profile_et_t *x, int first)
{
    if (first) {
        *sum = *x;
        return;
    }
    for (int k = 0; k < x->times.n; k++) {
        sum->times.conv_ms[k] += x->times.conv_ms[k];
        sum->times.branch_ms[k] += x->times.branch_ms[k];
        sum->times.link_ms[k] += x->times.link_ms[k];
        sum->times.result_ms[k] += x->times.result_ms[k];
    }
    sum->dispatch_ms += x->dispatch_ms;
}

static void profile_scale(profile_et_t *p, int count)
{
    for (int k = 0; k < p->times.n; k++) {
        p->times.conv_ms[k] /= count;
        p->times.branch_ms[k] /= count;
        p->times.link_ms[k] /= count;
        p->times.result_ms[k] /= count;
    }
    p->dispatch_ms /= count;
}

/* One request and its answer (window 1: nothing else is in flight). */
static int ask(client_t *c, const live_opts_t *o, const nn_dataset_t *d, int i,
               const elastic_policy_t *p, int n, double deadline_ms, einet_Answer *ans,
               ei_err_t *err)
{
    size_t numel = (size_t)d->h * (size_t)d->w;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_request_tag);
    einet_Request *r = &env.body.request;
    r->client_id = (uint64_t)i;
    uint32_t shape[4] = {1, 1, (uint32_t)d->h, (uint32_t)d->w};
    wire_meta_set(&r->input, &r->has_input, shape, 4);
    r->has_label = true;
    r->label = d->labels[i];
    if (deadline_ms > 0) {
        r->has_deadline_us = true;
        r->deadline_us = (uint64_t)llround(deadline_ms * 1000);
        r->deadline_us = r->deadline_us ? r->deadline_us : 1;
    }
    if (p && p->kind == ELASTIC_FIXED) {
        r->policy = einet_Policy_POLICY_FIXED;
        r->plan_count = (pb_size_t)n;
        for (int k = 0; k < n; k++)
            r->plan[k] = p->plan[k] != 0;
    } else if (p && p->kind == ELASTIC_CONFIDENCE) {
        r->policy = einet_Policy_POLICY_CONFIDENCE;
        r->threshold = (float)p->threshold;
    } else {
        r->policy = einet_Policy_POLICY_PLANNED;
        r->has_interrupt = true;
        r->interrupt.normal = o->dist->kind == PLANNER_DIST_NORMAL;
        r->interrupt.mu = (float)o->dist->mu;
        r->interrupt.sigma = (float)o->dist->sigma;
    }
    int rc = client_send(c, &env, d->images + (size_t)i * numel, numel, (int)o->timeout_ms, err);
    if (rc)
        return rc;
    uint64_t seq = env.seq;
    double until = ei_now() + (o->timeout_ms + deadline_ms) / 1e3;
    for (;;) {
        int left = (int)((until - ei_now()) * 1e3);
        rc = client_recv(c, &env, left > 0 ? left : 0, err);
        if (rc)
            return rc == EI_E_TIMEOUT ? ei_err_set(err, rc, "image %d: no answer in time", i)
                                      : rc;
        if (env.reply_to != seq)
            continue;
        if (env.which_body == einet_Envelope_error_tag)
            return ei_err_set(err, EI_E_PEER, "image %d: refused: %s", i,
                              env.body.error.message);
        if (env.which_body != einet_Envelope_answer_tag)
            continue;
        *ans = env.body.answer;
        return 0;
    }
}

static int live_runnable(const elastic_policy_t *p, ei_err_t *err)
{
    if (p->kind == ELASTIC_FIXED || p->kind == ELASTIC_CONFIDENCE ||
        (p->kind == ELASTIC_PLANNED && !strcmp(p->name, "einet")))
        return 0;
    return ei_err_set(err, EI_E_INVAL, "policy %s cannot run live (einet, static-*, "
                      "static-opt, single-exit, confidence-T and fixed plans can)", p->name);
}

/* Runs every policy on image i with deadline tau (ms); answers into ans[p][slot] (ans
 * NULL: not kept). */
static int ask_all(client_t *c, const live_opts_t *o, const nn_dataset_t *d,
                   const elastic_policy_t *pol, int npol, int n, int i, double tau,
                   elastic_live_answer_t **ans, int slot, ei_err_t *err)
{
    einet_Answer a;
    for (int p = 0; p < npol; p++) {
        if (ask(c, o, d, i, &pol[p], n, tau, &a, err))
            return err->code;
        if (!ans)
            continue;
        elastic_live_answer_t *x = &ans[p][slot];
        x->deadline_ms = (double)llround(tau * 1000) / 1000;
        x->status = a.status;
        x->exit = (int)a.exit;
        x->correct = a.exit > 0 && a.has_label && a.class_id == a.label;
        x->latency_ms = a.latency_us / 1e3;
    }
    return 0;
}

/* Waits (at most 10 s) for a live profile newer than version `seen` and adds it. */
static int wait_profile(client_t *c, const live_opts_t *o, uint64_t seen, profile_et_t *mean,
                        int *count, ei_err_t *err)
{
    profile_et_t et;
    uint64_t v;
    for (int t = 0; t < 100; t++) {
        int rc = fetch_on(c, o->endpoint, o->timeout_ms, &et, &v, err);
        if (rc)
            return rc;
        if (v != seen) {
            profile_add(mean, &et, (*count)++ == 0);
            return 0;
        }
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    return ei_err_set(err, EI_E_TIMEOUT, "the coordinator made no new live profile in 10 s");
}

int live_warmup(const live_opts_t *o, const elastic_t *el, const elastic_policy_t *pol,
                int npol, profile_et_t *mean, ei_err_t *err)
{
    int n = elastic_profile(el)->n, count = 0, rc = 0;
    for (int p = 0; p < npol; p++)
        if ((rc = live_runnable(&pol[p], err)))
            return rc;
    nn_dataset_t *d = nn_dataset_load(o->data_dir, "test", err);
    if (!d)
        return err->code;
    client_t *c = client_new(o->endpoint, err);
    int W = o->warmup > 0 ? o->warmup : 1, cap = 50 * W;
    double *tau = malloc((size_t)W * sizeof *tau);
    rc = !c ? err->code : !tau ? ei_err_set(err, EI_E_NOMEM, "out of memory") : 0;
    uint64_t seen = 0;
    profile_et_t et;
    if (!rc)
        elastic_live_deadlines(el, W, o->seed + 7, tau);
    /* The same traffic as the measured run, on other images, for at least o->warmup
     * images and until the coordinator has made two profiles (one a second) after the
     * first half of it: those, made under this traffic, are averaged. */
    for (int i = 0; o->warmup > 0 && !rc && (i < o->warmup || count < 2) && i < cap; i++) {
        rc = ask_all(c, o, d, pol, npol, n, (o->samples + i) % d->count, tau[i % W], NULL, 0,
                     err);
        uint64_t v;
        if (!rc && i >= o->warmup / 2 && i % 20 == 0 &&
            !(rc = fetch_on(c, o->endpoint, o->timeout_ms, &et, &v, err)) && v != seen) {
            if (seen) /* not the one made before the second half began */
                profile_add(mean, &et, count++ == 0);
            seen = v;
        }
    }
    if (!rc && count == 0)
        rc = wait_profile(c, o, seen, mean, &count, err);
    if (!rc)
        profile_scale(mean, count);
    free(tau);
    client_destroy(&c);
    nn_dataset_destroy(&d);
    return rc;
}

static int run_all(client_t *c, const live_opts_t *o, const nn_dataset_t *d,
                   const elastic_policy_t *pol, int npol, int n, const double *tau,
                   elastic_live_answer_t **ans, profile_et_t *mean, ei_err_t *err)
{
    double t0 = ei_now();
    uint64_t seen = 0, v;
    int count = 0;
    profile_et_t et;
    for (int i = 0; i < o->samples; i++) {
        if (ask_all(c, o, d, pol, npol, n, i, tau[i], ans, i, err))
            return err->code;
        /* The live profiles made during the run (after the first one seen) are averaged. */
        if (mean && i % 20 == 0) {
            if (fetch_on(c, o->endpoint, o->timeout_ms, &et, &v, err))
                return err->code;
            if (v != seen && seen)
                profile_add(mean, &et, count++ == 0);
            seen = v;
        }
        if ((i + 1) % 1000 == 0)
            fprintf(stderr, "einet elastic --live: %d of %d images, %.0f s\n", i + 1,
                    o->samples, ei_now() - t0);
    }
    if (mean && count == 0)
        return wait_profile(c, o, seen, mean, &count, err) ? err->code : 0;
    if (mean)
        profile_scale(mean, count);
    return 0;
}

int live_measure(const live_opts_t *o, const elastic_t *el, const elastic_policy_t *pol,
                 int npol, elastic_live_result_t *res, double **curves, int points,
                 double *tau_out, profile_et_t *run_mean, ei_err_t *err)
{
    int n = elastic_profile(el)->n, rc = 0;
    for (int p = 0; p < npol; p++)
        if ((rc = live_runnable(&pol[p], err)))
            return rc;
    nn_dataset_t *d = nn_dataset_load(o->data_dir, "test", err);
    if (!d)
        return err->code;
    if (o->samples > d->count) {
        nn_dataset_destroy(&d);
        return ei_err_set(err, EI_E_RANGE, "%d samples, the test split has %d", o->samples,
                          d->count);
    }
    double *tau = malloc((size_t)o->samples * sizeof *tau);
    elastic_live_answer_t **ans = calloc((size_t)npol, sizeof *ans);
    client_t *c = client_new(o->endpoint, err);
    rc = tau && ans ? 0 : ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (!c && !rc)
        rc = err->code;
    for (int p = 0; p < npol && !rc; p++)
        if (!(ans[p] = calloc((size_t)o->samples, sizeof **ans)))
            rc = ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (!rc) {
        elastic_live_deadlines(el, o->samples, o->seed, tau);
        rc = run_all(c, o, d, pol, npol, n, tau, ans, run_mean, err);
        for (int i = 0; tau_out && i < o->samples; i++)
            tau_out[i] = (double)llround(tau[i] * 1000) / 1000;
    }
    for (int p = 0; p < npol && !rc; p++) {
        elastic_curve_t curve = {points, curves ? curves[p] : NULL};
        rc = elastic_live_tally(el, ans[p], o->samples, &res[p], curves ? &curve : NULL, err);
    }
    for (int p = 0; ans && p < npol; p++)
        free(ans[p]);
    free(ans);
    free(tau);
    client_destroy(&c);
    nn_dataset_destroy(&d);
    return rc;
}
