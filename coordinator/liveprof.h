/* liveprof: the live ET-profile and the plan new requests start with. Block times come
 * from the nodes' reports (each node times the blocks it runs, as its machine takes them);
 * until a node has reported, from the coordinator's own timing of every block at start-up.
 * The link after each tier's last block is L_k = latency + feature-map bytes / bandwidth
 * from the sending node's measurements, and r_k is the latency from block k's node to the
 * coordinator (DESIGN.md, "ET-profile"). Each rebuild is a new version, pushed to the nodes
 * as a ProfileUpdate; the initial plan is searched again on it. */
#ifndef COORDINATOR_LIVEPROF_H
#define COORDINATOR_LIVEPROF_H

#include <stdint.h>

#include "common/ei.h"
#include "coordinator/cluster.h"
#include "nn/model.h"
#include "runtime/scores.h"
#include "proto/messages.pb.h"
#include "wire/conf.h"

typedef struct liveprof liveprof_t;

/* Makes the first profile (version 1) and plan of model m (prepared for inference,
 * max_batch >= 1), with the search and interruption distribution of conf and the exit
 * scores s (copied; a predictor in it is borrowed, not owned). The block times until the
 * nodes report are those of the ET-profile et when given (its n must be m's), else the
 * coordinator times every block itself. Caller owns the result; NULL with err set. */
liveprof_t *liveprof_new(nn_model_t *m, const conf_coord_t *conf, const scores_t *s,
                         const planner_profile_t *et, ei_err_t *err);
void liveprof_destroy(liveprof_t **self_p);

/* Rebuilds the profile from what the cluster has measured and replans: a new version. On a
 * profile the planner refuses, the previous one stays and a negative code is returned. */
int liveprof_rebuild(liveprof_t *self, const cluster_t *c, ei_err_t *err) EI_CHECK;

/* Replaces the exit scores (copied, a predictor borrowed); the next rebuild plans with
 * them. */
void liveprof_set_scores(liveprof_t *self, const scores_t *s);

/* The profile as a ProfileUpdate body. */
void liveprof_fill(const liveprof_t *self, einet_ProfileUpdate *out);

uint64_t liveprof_version(const liveprof_t *self);
/* The plan for new requests: n bits. */
const uint8_t *liveprof_plan(const liveprof_t *self);
int liveprof_blocks(const liveprof_t *self);
/* Horizon H of the current profile (ms) and the expected score of the current plan. */
double liveprof_horizon_ms(const liveprof_t *self);
double liveprof_expectation(const liveprof_t *self);

#endif
