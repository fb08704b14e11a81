/* Shared pieces of the einet command-line tool: the subcommands and the helpers that
 * give every one of them the same error style (one line on stderr, exit code 2). */
#ifndef CLI_H
#define CLI_H

#include "../common/ei.h"
#include "../nn/model.h"

/* Exit codes: 0 success, 1 a runtime failure (file, data, network), 2 a usage error. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Subcommands: each parses its own flags with getopt_long and returns an exit code. */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_ee_search(int argc, char **argv);
int cmd_ee_eval(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_predictor(int argc, char **argv);
int cmd_elastic(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_result(int argc, char **argv);
int cmd_fault(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

/* Prints "einet CMD: message" on stderr and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) EI_PRINTF(2, 3);

/* Prints "einet CMD: message" on stderr and returns CLI_FAIL. */
int cli_fail(const char *cmd, const char *fmt, ...) EI_PRINTF(2, 3);

/* Parses all of s as an integer in [lo, hi] / a finite number in [lo, hi]; 0 or -1. */
int cli_parse_long(const char *s, long lo, long hi, long *out) EI_CHECK;
int cli_parse_double(const char *s, double lo, double hi, double *out) EI_CHECK;

/* The getopt_long message for an unknown flag or missing value is replaced by ours:
 * call this with the option character getopt_long returned ('?' or ':') and optopt. */
int cli_bad_option(const char *cmd, char **argv, int optind_after);

/* Checks the input an architecture or model file (source) declares against the data's
 * sample shape before any data is loaded: the header of each split ("train", "test" or
 * "train,test") in dir (NULL: the default). On a mismatch prints "einet CMD: SOURCE:
 * declared input [C,H,W] does not match the data's shape [1,H,W] (FILE)" and returns
 * CLI_USAGE; data that cannot be read gives its error and CLI_FAIL; else CLI_OK. */
int cli_check_data(const char *cmd, const char *source, nn_shape_t input, const char *dir,
                   const char *splits);

/* Reads one input file for `einet infer --input` into out[c * h * w] (planar, [0, 1] for
 * images): a PNG (gray or RGB, converted to c = 1 or 3 channels; another size is refused
 * unless resize, which scales it bilinearly) or a .npy float32 array of shape (c, h, w),
 * (1, c, h, w) or, for c = 1, (h, w). EI_E_NOTFOUND, EI_E_FORMAT (not PNG/.npy, bad dtype,
 * truncated), EI_E_SHAPE or EI_E_NONFINITE with err naming the file and what is wrong. */
int cli_input_load(const char *path, int c, int h, int w, int resize, float *out,
                   ei_err_t *err) EI_CHECK;

/* Paths of the shipped defaults, relative to the source root or $EINET_HOME. */
const char *cli_default_path(const char *rel, char *buf, int len);

#endif
