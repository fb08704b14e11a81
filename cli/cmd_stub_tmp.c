/* Temporary until the commands land (removed before any issue is resolved). */
#include "cli.h"
