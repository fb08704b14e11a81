/* Stop rules as text: the form `einet infer --stop` and the coordinator's `stop` key take
 * (see wire.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"

static const char *const kind_names[] = {"none", "confidence", "entropy", "einet"};

const char *wire_stop_kind_name(int kind)
{
    return kind >= 0 && kind <= einet_StopKind_STOP_EINET ? kind_names[kind] : "unknown";
}

int wire_stop_parse(const char *text, einet_StopRule *rule, char *why, size_t cap)
{
    static const char expected[] =
        "none, confidence:T, entropy:T or einet:A with the number in [0, 1]";
    memset(rule, 0, sizeof *rule);
    if (!strcmp(text, "none"))
        return 0;
    const char *colon = strchr(text, ':');
    int kind = -1;
    for (int k = einet_StopKind_STOP_CONFIDENCE; colon && k <= einet_StopKind_STOP_EINET; k++)
        if ((size_t)(colon - text) == strlen(kind_names[k]) &&
            !strncmp(text, kind_names[k], (size_t)(colon - text)))
            kind = k;
    if (kind < 0) {
        snprintf(why, cap, "'%s' is not a stop rule: %s", text, expected);
        return -1;
    }
    char *end;
    double v = strtod(colon + 1, &end);
    if (end == colon + 1 || *end || !(v >= 0.0 && v <= 1.0)) {
        snprintf(why, cap, "'%s': the %s rule's number must be in [0, 1]", text,
                 kind_names[kind]);
        return -1;
    }
    rule->kind = (einet_StopKind)kind;
    rule->threshold = (float)v;
    return 0;
}

void wire_stop_format(const einet_StopRule *rule, char *buf, size_t cap)
{
    if (rule->kind == einet_StopKind_STOP_NONE)
        snprintf(buf, cap, "none");
    else
        snprintf(buf, cap, "%s:%g", wire_stop_kind_name(rule->kind), (double)rule->threshold);
}
