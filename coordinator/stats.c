/* Counters and latency percentiles for `einet stats` (see stats.h). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/stats.h"

#define STATS_STATUSES 16
#define STATS_TIERS 4

struct stats {
    int n_exits;
    uint64_t requests, labelled, correct;
    uint64_t by_status[STATS_STATUSES];
    /* Accuracy per status: device-ee answers and link answers are judged on their own. */
    uint64_t labelled_by_status[STATS_STATUSES], correct_by_status[STATS_STATUSES];
    uint64_t *by_exit; /* n_exits + 1 */
    /* `early` answers (a stop rule fired) by exit (n_exits + 1) and tier; labelled, right */
    uint64_t *early_by_exit, *early_labelled_by_exit, *early_correct_by_exit;
    uint64_t early_by_tier[STATS_TIERS], early_labelled_by_tier[STATS_TIERS];
    uint64_t early_correct_by_tier[STATS_TIERS];
    double mflop_sum; /* over the answers counted by exit */
    uint64_t mflop_n;
    uint64_t by_tier[STATS_TIERS];
    uint64_t bad[STATS_SOCKS];
    float *lat;    /* ring of latencies, ms */
    float *sorted; /* scratch for percentiles */
    size_t window, nlat, lat_at;
    uint64_t faults_seen;
    einet_FaultEvent faults[STATS_FAULTS_KEPT]; /* ring; faults_seen % KEPT is next */
};

stats_t *stats_new(int n_exits, size_t window)
{
    stats_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->n_exits = n_exits > 128 ? 128 : n_exits < 1 ? 1 : n_exits;
    self->window = window ? window : STATS_WINDOW;
    self->by_exit = calloc((size_t)self->n_exits + 1, sizeof *self->by_exit);
    self->early_by_exit = calloc((size_t)self->n_exits + 1, sizeof *self->by_exit);
    self->early_labelled_by_exit = calloc((size_t)self->n_exits + 1, sizeof *self->by_exit);
    self->early_correct_by_exit = calloc((size_t)self->n_exits + 1, sizeof *self->by_exit);
    self->lat = malloc(self->window * sizeof *self->lat);
    self->sorted = malloc(self->window * sizeof *self->sorted);
    if (!self->by_exit || !self->lat || !self->sorted || !self->early_by_exit ||
        !self->early_labelled_by_exit || !self->early_correct_by_exit)
        stats_destroy(&self);
    return self;
}

void stats_destroy(stats_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    stats_t *self = *self_p;
    free(self->by_exit);
    free(self->early_by_exit);
    free(self->early_labelled_by_exit);
    free(self->early_correct_by_exit);
    free(self->lat);
    free(self->sorted);
    free(self);
    *self_p = NULL;
}

void stats_request(stats_t *self)
{
    self->requests++;
}

/* An `early` answer, by its exit and tier. */
static void early(stats_t *self, const einet_Answer *a)
{
    int k = a->exit <= (uint32_t)self->n_exits ? (int)a->exit : 0;
    int t = a->tier >= 0 && a->tier < STATS_TIERS ? (int)a->tier : 0;
    int right = a->has_label && a->exit > 0 && a->class_id == a->label;
    self->early_by_exit[k]++;
    self->early_by_tier[t]++;
    self->early_labelled_by_exit[k] += a->has_label;
    self->early_labelled_by_tier[t] += a->has_label;
    self->early_correct_by_exit[k] += right;
    self->early_correct_by_tier[t] += right;
}

void stats_answer(stats_t *self, const einet_Answer *a)
{
    if (a->status >= 0 && a->status < STATS_STATUSES)
        self->by_status[a->status]++;
    if (a->status == einet_Status_STATUS_REJECTED)
        return;
    if (a->exit <= (uint32_t)self->n_exits)
        self->by_exit[a->exit]++;
    if (a->tier >= 0 && a->tier < STATS_TIERS)
        self->by_tier[a->tier]++;
    self->mflop_sum += a->mflop;
    self->mflop_n++;
    if (a->status == einet_Status_STATUS_EARLY)
        early(self, a);
    if (a->has_label) {
        int right = a->exit > 0 && a->class_id == a->label;
        self->labelled++;
        self->correct += right;
        if (a->status >= 0 && a->status < STATS_STATUSES) {
            self->labelled_by_status[a->status]++;
            self->correct_by_status[a->status] += right;
        }
    }
    self->lat[self->lat_at] = (float)((double)a->latency_us / 1000.0);
    self->lat_at = (self->lat_at + 1) % self->window;
    if (self->nlat < self->window)
        self->nlat++;
}

void stats_bad(stats_t *self, int sock)
{
    if (sock >= 0 && sock < STATS_SOCKS)
        self->bad[sock]++;
}

uint64_t stats_bad_count(const stats_t *self, int sock)
{
    return sock >= 0 && sock < STATS_SOCKS ? self->bad[sock] : 0;
}

void stats_fault(stats_t *self, uint64_t at_us, int tier, int link, const char *what)
{
    einet_FaultEvent *e = &self->faults[self->faults_seen % STATS_FAULTS_KEPT];
    memset(e, 0, sizeof *e);
    e->at_us = at_us;
    e->tier = tier;
    e->link = link;
    snprintf(e->what, sizeof e->what, "%s", what ? what : "");
    self->faults_seen++;
}

/* Wirth's selection: afterwards v[k] holds the (k+1)-th smallest value. */
static void select_kth(float *v, size_t n, size_t k)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
    while (lo < hi) {
        float x = v[kk];
        ptrdiff_t i = lo, j = hi;
        do {
            while (v[i] < x)
                i++;
            while (x < v[j])
                j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        } while (i <= j);
        if (j < kk)
            lo = i;
        if (kk < i)
            hi = j;
    }
}

float stats_percentile(float *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    double r = ceil(p / 100.0 * (double)n);
    size_t rank = r < 1 ? 1 : r > (double)n ? n : (size_t)r;
    select_kth(v, n, rank - 1);
    return v[rank - 1];
}

static void fill_counts(const stats_t *self, einet_StatsReply *out)
{
    out->requests = self->requests;
    out->labelled = self->labelled;
    out->correct = self->correct;
    const int nstat = einet_Status_STATUS_EARLY + 1; /* statuses 0..8 */
    out->by_status_count = nstat;
    out->labelled_by_status_count = out->correct_by_status_count = nstat;
    for (int i = 0; i < nstat; i++) {
        out->by_status[i] = self->by_status[i];
        out->labelled_by_status[i] = self->labelled_by_status[i];
        out->correct_by_status[i] = self->correct_by_status[i];
    }
    out->by_exit_count = (pb_size_t)(self->n_exits + 1);
    for (int i = 0; i <= self->n_exits; i++)
        out->by_exit[i] = self->by_exit[i];
    out->by_tier_count = STATS_TIERS;
    for (int i = 0; i < STATS_TIERS; i++)
        out->by_tier[i] = self->by_tier[i];
    out->bad_messages = self->bad[STATS_SOCK_CLIENTS] + self->bad[STATS_SOCK_NODES];
    out->early_by_exit_count = out->early_labelled_by_exit_count =
        out->early_correct_by_exit_count = (pb_size_t)(self->n_exits + 1);
    for (int i = 0; i <= self->n_exits; i++) {
        out->early_by_exit[i] = self->early_by_exit[i];
        out->early_labelled_by_exit[i] = self->early_labelled_by_exit[i];
        out->early_correct_by_exit[i] = self->early_correct_by_exit[i];
    }
    out->early_by_tier_count = out->early_labelled_by_tier_count =
        out->early_correct_by_tier_count = STATS_TIERS;
    for (int i = 0; i < STATS_TIERS; i++) {
        out->early_by_tier[i] = self->early_by_tier[i];
        out->early_labelled_by_tier[i] = self->early_labelled_by_tier[i];
        out->early_correct_by_tier[i] = self->early_correct_by_tier[i];
    }
    out->mflop_mean = self->mflop_n ? (float)(self->mflop_sum / (double)self->mflop_n) : 0;
}

static void fill_faults(const stats_t *self, einet_StatsReply *out)
{
    out->faults_seen = self->faults_seen;
    uint64_t kept = self->faults_seen < STATS_FAULTS_KEPT ? self->faults_seen : STATS_FAULTS_KEPT;
    out->faults_count = (pb_size_t)kept;
    for (uint64_t i = 0; i < kept; i++) /* oldest first */
        out->faults[i] = self->faults[(self->faults_seen - kept + i) % STATS_FAULTS_KEPT];
}

void stats_fill(stats_t *self, einet_StatsReply *out)
{
    fill_counts(self, out);
    fill_faults(self, out);
    memcpy(self->sorted, self->lat, self->nlat * sizeof *self->lat);
    out->latency_p50_ms = stats_percentile(self->sorted, self->nlat, 50);
    out->latency_p95_ms = stats_percentile(self->sorted, self->nlat, 95);
    out->latency_p99_ms = stats_percentile(self->sorted, self->nlat, 99);
}

void stats_reset(stats_t *self)
{
    self->requests = self->labelled = self->correct = 0;
    memset(self->by_status, 0, sizeof self->by_status);
    memset(self->labelled_by_status, 0, sizeof self->labelled_by_status);
    memset(self->correct_by_status, 0, sizeof self->correct_by_status);
    memset(self->by_exit, 0, sizeof(uint64_t) * ((size_t)self->n_exits + 1));
    memset(self->by_tier, 0, sizeof self->by_tier);
    size_t exits = sizeof(uint64_t) * ((size_t)self->n_exits + 1);
    memset(self->early_by_exit, 0, exits);
    memset(self->early_labelled_by_exit, 0, exits);
    memset(self->early_correct_by_exit, 0, exits);
    memset(self->early_by_tier, 0, sizeof self->early_by_tier);
    memset(self->early_labelled_by_tier, 0, sizeof self->early_labelled_by_tier);
    memset(self->early_correct_by_tier, 0, sizeof self->early_correct_by_tier);
    self->mflop_sum = 0;
    self->mflop_n = 0;
    memset(self->bad, 0, sizeof self->bad);
    self->nlat = self->lat_at = 0;
    self->faults_seen = 0;
}
