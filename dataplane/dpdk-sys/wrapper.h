/* Every DPDK header the switch uses; bindgen and the generated static-inline wrappers include it. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_devargs.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_eth_vhost.h>
#include <rte_vhost.h>
#include <rte_version.h>

/* Thread-locals and macros bindgen cannot express; see shim.c. */
int evs_rte_errno(void);
