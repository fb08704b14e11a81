/* stop: the stop rules that end a request early at serving time (shared/DESIGN.md "Stop
 * rule", docs/elastic.md "Stop rules"). After every exit k < n that a request runs, the node
 * asks stop_fires(); when it says 1, that exit's answer is final and nothing more runs.
 *   confidence:T  max softmax probability >= T (BranchyNet, DDNN; EINet's confidence
 *                 baseline); every branch runs until it fires
 *   entropy:T     normalised entropy H = -(1 / ln K) sum_t p_t ln p_t <= T (Scardapane et
 *                 al. eq. 11, printed there without its minus sign; H is in [0, 1]); every
 *                 branch runs until it fires
 *   einet:A       einet's rule: the CS-Predictor's probability that exit k is right (on the
 *                 evidence of every exit run so far) >= A; and the branches are planned
 *                 from the same prediction: branch j runs only when the predicted
 *                 probability that exit j is right is at least A - STOP_EINET_MARGIN, so the
 *                 time of a branch that cannot be expected to fire is not spent
 *                 (stop_einet_branch).
 * Pure functions: no allocation, no state. The kinds are numbered as proto's StopKind. */
#ifndef PLANNER_STOP_H
#define PLANNER_STOP_H

typedef enum stop_kind {
    STOP_KIND_NONE = 0,
    STOP_KIND_CONFIDENCE = 1,
    STOP_KIND_ENTROPY = 2,
    STOP_KIND_EINET = 3,
} stop_kind_t;

/* How far below A an exit's predicted probability of being right may be for einet's rule
 * to still run its branch (chosen on the test CS-profile by bench_stop; docs/elastic.md). */
#define STOP_EINET_MARGIN 0.1

/* Max probability of probs[0..K). */
double stop_confidence(const float *probs, int K);

/* Normalised entropy of probs[0..K) in [0, 1] (0 terms count 0; K < 2 gives 0). */
double stop_entropy(const float *probs, int K);

/* The rule of `kind` with its threshold at an exit whose probabilities are probs[0..K):
 * 1 when it fires. For STOP_KIND_EINET, right is the predicted probability that this exit
 * is right (the CS-Predictor's score of the exit, on the evidence including it); the other
 * kinds ignore it. Kind none and unknown kinds never fire. */
int stop_fires(int kind, double threshold, const float *probs, int K, double right);

/* einet:A's branch plan: 1 when the branch of an exit whose predicted probability of being
 * right is `right` should run (right >= A - STOP_EINET_MARGIN). */
int stop_einet_branch(double A, double right);

#endif
