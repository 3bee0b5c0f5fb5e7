/* Hand shim for what bindgen cannot wrap: rte_errno is a per-lcore thread-local (a macro over
 * per_lcore__rte_errno). Static-inline functions are wrapped by bindgen's wrap_static_fns. */
#include "wrapper.h"

int evs_rte_errno(void) { return rte_errno; }
