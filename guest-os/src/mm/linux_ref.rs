//! Linux's zonelist construction, transcribed line by line from
//! mm/page_alloc.c: deliberately unoptimized and kept apart from
//! [`super::zonelist`], which is checked against it (host property tests
//! on random topologies of up to 64 nodes, and the guest's `zonelists`
//! KTAP suite on the machine it boots on).
//!
//! Sources, with the C in comments next to each line:
//! - `find_next_best_node`, `build_zonelists`, `build_zonerefs_node`,
//!   `build_zonelists_in_node_order`, `build_thisnode_zonelists`,
//!   `__build_all_zonelists` and the two `pr_info`s: Linux 5.16 and later
//!   (accumulated `node_load[node] += 1`; `populated_zone()` in
//!   `build_zonerefs_node` since 5.18);
//! - `build_zonelists_in_zone_order` and the "in %s order" line: Linux 4.13,
//!   the last kernel with zone ordering;
//! - `default_zonelist_order`: the heuristic of Linux 2.6.23 to 4.6.
//!
//! C `int`s stay `i32` where they cannot overflow and `i64` where Linux's
//! `val` is computed (`INT_MAX` kept as the starting minimum), so distances
//! up to 255 (all a SLIT can hold) give exactly Linux's answers. Node masks
//! and per-node arrays are sized `MAX_NUMNODES` as in the kernel.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// `MAX_NUMNODES` (`1 << CONFIG_NODES_SHIFT`, 10 on Debian x86-64).
pub const MAX_NUMNODES: usize = 1 << 10;
/// `NUMA_NO_NODE`.
pub const NUMA_NO_NODE: i32 = -1;
/// `PENALTY_FOR_NODE_WITH_CPUS`.
pub const PENALTY_FOR_NODE_WITH_CPUS: i64 = 1;
const INT_MAX: i64 = i32::MAX as i64;
/// `MAX_NR_ZONES` for the zones this guest has: DMA, DMA32, Normal.
pub const MAX_NR_ZONES: usize = 3;
/// `ZONE_NORMAL`.
pub const ZONE_NORMAL: usize = 2;
/// `ZONELIST_FALLBACK`.
pub const ZONELIST_FALLBACK: usize = 0;
/// `ZONELIST_NOFALLBACK`.
pub const ZONELIST_NOFALLBACK: usize = 1;
/// `ZONELIST_ORDER_DEFAULT` (4.13).
pub const ZONELIST_ORDER_DEFAULT: i32 = 0;
/// `ZONELIST_ORDER_NODE` (4.13).
pub const ZONELIST_ORDER_NODE: i32 = 1;
/// `ZONELIST_ORDER_ZONE` (4.13).
pub const ZONELIST_ORDER_ZONE: i32 = 2;
/// `zonelist_order_name[]` (4.13).
const ZONELIST_ORDER_NAME: [&str; 3] = ["Default", "Node", "Zone"];
/// `pageblock_nr_pages` (2 MiB) and `MIGRATE_TYPES` (with CMA and
/// isolation) on x86-64.
const PAGEBLOCK_NR_PAGES: i64 = 512;
const MIGRATE_TYPES: i64 = 6;

/// The machine as Linux sees it when `build_all_zonelists()` runs.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// `nr_node_ids`.
    pub nr_node_ids: usize,
    /// `node_distance(from, to)`.
    pub distance: Vec<Vec<i32>>,
    /// `node_possible_map` (`for_each_node`).
    pub possible: Vec<bool>,
    /// `node_online_map`.
    pub online: Vec<bool>,
    /// `cpumask_of_node(n)` not empty *at build time* (all `false` on x86
    /// at boot).
    pub cpus: Vec<bool>,
    /// `zone->present_pages`, per node, per zone type.
    pub present_pages: Vec<[i64; MAX_NR_ZONES]>,
    /// `zone_managed_pages(zone)`.
    pub managed_pages: Vec<[i64; MAX_NR_ZONES]>,
    /// `numa_node_id()` of the CPU running the build (the boot CPU's node).
    pub boot_node: usize,
}

/// A `struct zoneref`: node and zone index; `None` is the terminator
/// (`zone == NULL`).
pub type Zoneref = Option<(usize, usize)>;

/// The kernel's state: the globals the build reads and writes, and the log.
pub struct Kernel<'a> {
    m: &'a Machine,
    /// `static int node_load[MAX_NUMNODES];`
    pub node_load: Vec<i32>,
    /// `static int node_order[MAX_NUMNODES];` (in `build_zonelists`).
    node_order: Vec<i32>,
    /// `pgdat->node_zonelists[MAX_ZONELISTS]._zonerefs[]`, per node.
    pub node_zonelists: Vec<[Vec<Zoneref>; 2]>,
    /// Per node: the node order `build_zonelists` printed.
    pub printed_order: Vec<Vec<i32>>,
    /// `current_zonelist_order` (4.13).
    pub current_zonelist_order: i32,
    /// `vm_total_pages`.
    pub vm_total_pages: i64,
    /// What `pr_info`/`pr_cont` printed.
    pub log: String,
}

impl<'a> Kernel<'a> {
    /// A kernel on `m`.
    pub fn new(m: &'a Machine) -> Self {
        // MAX_ZONES_PER_ZONELIST + 1 = MAX_NUMNODES * MAX_NR_ZONES + 1, but
        // sized for the nodes that exist (the rest would stay NULL).
        let slots = m.nr_node_ids * MAX_NR_ZONES + 1;
        Kernel {
            m,
            node_load: vec![0; MAX_NUMNODES],
            node_order: vec![0; MAX_NUMNODES],
            node_zonelists: (0..m.nr_node_ids)
                .map(|_| [vec![None; slots], vec![None; slots]])
                .collect(),
            printed_order: vec![Vec::new(); m.nr_node_ids],
            current_zonelist_order: ZONELIST_ORDER_NODE,
            vm_total_pages: 0,
            log: String::new(),
        }
    }

    fn node_distance(&self, a: i32, b: i32) -> i32 {
        self.m.distance[a as usize][b as usize]
    }

    fn populated_zone(&self, nid: usize, zone_type: usize) -> bool {
        self.m.present_pages[nid][zone_type] != 0
    }

    fn node_state_memory(&self, n: usize) -> bool {
        // N_MEMORY: a node with present pages.
        (0..MAX_NR_ZONES).any(|z| self.populated_zone(n, z))
    }

    /// `int find_next_best_node(int node, nodemask_t *used_node_mask)`
    pub fn find_next_best_node(&mut self, node: i32, used_node_mask: &mut [bool]) -> i32 {
        // int n, val;
        // int min_val = INT_MAX;
        // int best_node = NUMA_NO_NODE;
        let mut val: i64;
        let mut min_val: i64 = INT_MAX;
        let mut best_node: i32 = NUMA_NO_NODE;

        // /* Use the local node if we haven't already */
        // if (!node_isset(node, *used_node_mask)) {
        //         node_set(node, *used_node_mask);
        //         return node;
        // }
        if !used_node_mask[node as usize] {
            used_node_mask[node as usize] = true;
            return node;
        }

        // for_each_node_state(n, N_MEMORY) {
        for n in 0..self.m.nr_node_ids as i32 {
            if !self.node_state_memory(n as usize) {
                continue;
            }
            // /* Don't want a node to appear more than once */
            // if (node_isset(n, *used_node_mask))
            //         continue;
            if used_node_mask[n as usize] {
                continue;
            }

            // /* Use the distance array to find the distance */
            // val = node_distance(node, n);
            val = i64::from(self.node_distance(node, n));

            // /* Penalize nodes under us ("prefer the next node") */
            // val += (n < node);
            val += i64::from(n < node);

            // /* Give preference to headless and unused nodes */
            // if (!cpumask_empty(cpumask_of_node(n)))
            //         val += PENALTY_FOR_NODE_WITH_CPUS;
            if self.m.cpus[n as usize] {
                val += PENALTY_FOR_NODE_WITH_CPUS;
            }

            // /* Slight preference for less loaded node */
            // val *= MAX_NUMNODES;
            // val += node_load[n];
            val *= MAX_NUMNODES as i64;
            val += i64::from(self.node_load[n as usize]);

            // if (val < min_val) {
            //         min_val = val;
            //         best_node = n;
            // }
            if val < min_val {
                min_val = val;
                best_node = n;
            }
        }

        // if (best_node >= 0)
        //         node_set(best_node, *used_node_mask);
        if best_node >= 0 {
            used_node_mask[best_node as usize] = true;
        }

        // return best_node;
        best_node
    }

    /// `static int build_zonerefs_node(pg_data_t *pgdat, struct zoneref
    /// *zonerefs)`; `zonerefs` is `list[at..]`.
    fn build_zonerefs_node(&self, pgdat: usize, list: &mut [Zoneref], at: usize) -> usize {
        // enum zone_type zone_type = MAX_NR_ZONES;
        // int nr_zones = 0;
        let mut zone_type = MAX_NR_ZONES;
        let mut nr_zones = 0;
        // do {
        loop {
            // zone_type--;
            zone_type -= 1;
            // zone = pgdat->node_zones + zone_type;
            // if (populated_zone(zone)) {
            //         zoneref_set_zone(zone, &zonerefs[nr_zones++]);
            //         check_highest_zone(zone_type);
            // }
            if self.populated_zone(pgdat, zone_type) {
                list[at + nr_zones] = Some((pgdat, zone_type));
                nr_zones += 1;
            }
            // } while (zone_type);
            if zone_type == 0 {
                break;
            }
        }
        // return nr_zones;
        nr_zones
    }

    /// `static void build_zonelists_in_node_order(pg_data_t *pgdat, int
    /// *node_order, unsigned nr_nodes)`
    fn build_zonelists_in_node_order(&mut self, pgdat: usize, nr_nodes: usize) {
        // zonerefs = pgdat->node_zonelists[ZONELIST_FALLBACK]._zonerefs;
        let mut list = core::mem::take(&mut self.node_zonelists[pgdat][ZONELIST_FALLBACK]);
        let mut zonerefs = 0;
        // for (i = 0; i < nr_nodes; i++) {
        for i in 0..nr_nodes {
            // pg_data_t *node = NODE_DATA(node_order[i]);
            let node = self.node_order[i] as usize;
            // nr_zones = build_zonerefs_node(node, zonerefs);
            let nr_zones = self.build_zonerefs_node(node, &mut list, zonerefs);
            // zonerefs += nr_zones;
            zonerefs += nr_zones;
        }
        // zonerefs->zone = NULL;
        // zonerefs->zone_idx = 0;
        list[zonerefs] = None;
        self.node_zonelists[pgdat][ZONELIST_FALLBACK] = list;
    }

    /// Linux 4.13: `static void build_zonelists_in_zone_order(pg_data_t
    /// *pgdat, int nr_nodes)`
    fn build_zonelists_in_zone_order(&mut self, pgdat: usize, nr_nodes: usize) {
        // zonelist = &pgdat->node_zonelists[ZONELIST_FALLBACK];
        let mut list = core::mem::take(&mut self.node_zonelists[pgdat][ZONELIST_FALLBACK]);
        // pos = 0;
        let mut pos = 0;
        // for (zone_type = MAX_NR_ZONES - 1; zone_type >= 0; zone_type--) {
        let mut zone_type = MAX_NR_ZONES as i32 - 1;
        while zone_type >= 0 {
            // for (j = 0; j < nr_nodes; j++) {
            for j in 0..nr_nodes {
                // node = node_order[j];
                let node = self.node_order[j] as usize;
                // z = &NODE_DATA(node)->node_zones[zone_type];
                // if (managed_zone(z)) {   (populated_zone since 5.18)
                //         zoneref_set_zone(z, &zonelist->_zonerefs[pos++]);
                //         check_highest_zone(zone_type);
                // }
                if self.populated_zone(node, zone_type as usize) {
                    list[pos] = Some((node, zone_type as usize));
                    pos += 1;
                }
            }
            zone_type -= 1;
        }
        // zonelist->_zonerefs[pos].zone = NULL;
        // zonelist->_zonerefs[pos].zone_idx = 0;
        list[pos] = None;
        self.node_zonelists[pgdat][ZONELIST_FALLBACK] = list;
    }

    /// `static void build_thisnode_zonelists(pg_data_t *pgdat)`
    fn build_thisnode_zonelists(&mut self, pgdat: usize) {
        // zonerefs = pgdat->node_zonelists[ZONELIST_NOFALLBACK]._zonerefs;
        let mut list = core::mem::take(&mut self.node_zonelists[pgdat][ZONELIST_NOFALLBACK]);
        // nr_zones = build_zonerefs_node(pgdat, zonerefs);
        let nr_zones = self.build_zonerefs_node(pgdat, &mut list, 0);
        // zonerefs += nr_zones;
        // zonerefs->zone = NULL;
        // zonerefs->zone_idx = 0;
        list[nr_zones] = None;
        self.node_zonelists[pgdat][ZONELIST_NOFALLBACK] = list;
    }

    /// `static void build_zonelists(pg_data_t *pgdat)`, with 4.13's choice
    /// of zone order.
    fn build_zonelists(&mut self, pgdat: usize) {
        // static int node_order[MAX_NUMNODES];
        // int node, nr_nodes = 0;
        // nodemask_t used_mask = NODE_MASK_NONE;
        // int local_node, prev_node;
        let mut nr_nodes = 0;
        let mut used_mask = vec![false; MAX_NUMNODES];

        // /* NUMA-aware ordering of nodes */
        // local_node = pgdat->node_id;
        // prev_node = local_node;
        let local_node = pgdat as i32;
        let mut prev_node = local_node;

        // memset(node_order, 0, sizeof(node_order));
        self.node_order.fill(0);
        // while ((node = find_next_best_node(local_node, &used_mask)) >= 0) {
        loop {
            let node = self.find_next_best_node(local_node, &mut used_mask);
            if node < 0 {
                break;
            }
            // /*
            //  * We don't want to pressure a particular node.
            //  * So adding penalty to the first node in same
            //  * distance group to make it round-robin.
            //  */
            // if (node_distance(local_node, node) !=
            //     node_distance(local_node, prev_node))
            //         node_load[node] += 1;
            if self.node_distance(local_node, node) != self.node_distance(local_node, prev_node) {
                self.node_load[node as usize] += 1;
            }

            // node_order[nr_nodes++] = node;
            // prev_node = node;
            self.node_order[nr_nodes] = node;
            nr_nodes += 1;
            prev_node = node;
        }

        // build_zonelists_in_node_order(pgdat, node_order, nr_nodes);
        // (4.13: if (order == ZONELIST_ORDER_ZONE)
        //         build_zonelists_in_zone_order(pgdat, i);)
        if self.current_zonelist_order == ZONELIST_ORDER_ZONE {
            self.build_zonelists_in_zone_order(pgdat, nr_nodes);
        } else {
            self.build_zonelists_in_node_order(pgdat, nr_nodes);
        }
        // build_thisnode_zonelists(pgdat);
        self.build_thisnode_zonelists(pgdat);
        // pr_info("Fallback order for Node %d: ", local_node);
        // for (node = 0; node < nr_nodes; node++)
        //         pr_cont("%d ", node_order[node]);
        // pr_cont("\n");
        self.log
            .push_str(&format!("Fallback order for Node {local_node}: "));
        for node in 0..nr_nodes {
            self.log.push_str(&format!("{} ", self.node_order[node]));
        }
        self.log.push('\n');
        self.printed_order[pgdat] = self.node_order[..nr_nodes].to_vec();
    }

    /// `static unsigned long nr_free_zone_pages(int offset)`, high
    /// watermarks still 0 at boot, every zone type allowed.
    fn nr_free_zone_pages(&self) -> i64 {
        // struct zonelist *zonelist = node_zonelist(numa_node_id(), GFP_KERNEL);
        let zonelist = &self.node_zonelists[self.m.boot_node][ZONELIST_FALLBACK];
        let mut sum = 0;
        // for_each_zone_zonelist(zone, z, zonelist, offset) {
        for z in zonelist.iter().map_while(|z| *z) {
            // unsigned long size = zone_managed_pages(zone);
            // unsigned long high = high_wmark_pages(zone);
            // if (size > high)
            //         sum += size - high;
            let size = self.m.managed_pages[z.0][z.1];
            let high = 0;
            if size > high {
                sum += size - high;
            }
        }
        sum
    }

    /// `build_all_zonelists(NULL)` at boot: `__build_all_zonelists(NULL)`
    /// and the summary line.
    pub fn build_all_zonelists(&mut self) {
        // memset(node_load, 0, sizeof(node_load));
        self.node_load.fill(0);
        // for_each_node(nid) {
        //         pg_data_t *pgdat = NODE_DATA(nid);
        //         build_zonelists(pgdat);
        // }
        for nid in 0..self.m.nr_node_ids {
            if self.m.possible[nid] {
                self.build_zonelists(nid);
            }
        }
        // vm_total_pages = nr_free_zone_pages(gfp_zone(GFP_HIGHUSER_MOVABLE));
        self.vm_total_pages = self.nr_free_zone_pages();
        // if (vm_total_pages < (pageblock_nr_pages * MIGRATE_TYPES))
        //         page_group_by_mobility_disabled = 1;
        let disabled = self.vm_total_pages < PAGEBLOCK_NR_PAGES * MIGRATE_TYPES;
        let nr_online_nodes = self.m.online.iter().filter(|&&o| o).count();
        let mobility = if disabled { "off" } else { "on" };
        if self.current_zonelist_order == ZONELIST_ORDER_ZONE {
            // 4.13: pr_info("Built %i zonelists in %s order, mobility grouping %s.  Total pages: %ld\n", ...
            self.log.push_str(&format!(
                "Built {nr_online_nodes} zonelists in {} order, mobility grouping {mobility}.  Total pages: {}\n",
                ZONELIST_ORDER_NAME[self.current_zonelist_order as usize],
                self.vm_total_pages
            ));
        } else {
            // pr_info("Built %u zonelists, mobility grouping %s.  Total pages: %ld\n", ...
            self.log.push_str(&format!(
                "Built {nr_online_nodes} zonelists, mobility grouping {mobility}.  Total pages: {}\n",
                self.vm_total_pages
            ));
        }
    }

    /// Linux 2.6.23–4.6: `static int default_zonelist_order(void)`
    pub fn default_zonelist_order(&self) -> i32 {
        // low_kmem_size = 0;
        // total_size = 0;
        let mut low_kmem_size: i64 = 0;
        let mut total_size: i64 = 0;
        // for_each_online_node(nid) {
        for nid in 0..self.m.nr_node_ids {
            if !self.m.online[nid] {
                continue;
            }
            // for (zone_type = 0; zone_type < MAX_NR_ZONES; zone_type++) {
            for zone_type in 0..MAX_NR_ZONES {
                // z = &NODE_DATA(nid)->node_zones[zone_type];
                // if (populated_zone(z)) {
                if self.populated_zone(nid, zone_type) {
                    // if (zone_type < ZONE_NORMAL)
                    //         low_kmem_size += z->managed_pages;
                    // total_size += z->managed_pages;
                    if zone_type < ZONE_NORMAL {
                        low_kmem_size += self.m.managed_pages[nid][zone_type];
                    }
                    total_size += self.m.managed_pages[nid][zone_type];
                // } else if (zone_type == ZONE_NORMAL) {
                } else if zone_type == ZONE_NORMAL {
                    // return ZONELIST_ORDER_NODE;
                    return ZONELIST_ORDER_NODE;
                }
            }
        }
        // if (!low_kmem_size ||  /* there are no DMA area. */
        //     low_kmem_size > total_size/2) /* DMA/DMA32 is big. */
        //         return ZONELIST_ORDER_NODE;
        if low_kmem_size == 0 || low_kmem_size > total_size / 2 {
            return ZONELIST_ORDER_NODE;
        }
        // average_size = total_size /
        //                 (nodes_weight(node_states[N_MEMORY]) + 1);
        let weight = (0..self.m.nr_node_ids)
            .filter(|&n| self.node_state_memory(n))
            .count() as i64;
        let average_size = total_size / (weight + 1);
        // for_each_online_node(nid) {
        for nid in 0..self.m.nr_node_ids {
            if !self.m.online[nid] {
                continue;
            }
            // low_kmem_size = 0;
            // total_size = 0;
            low_kmem_size = 0;
            total_size = 0;
            // for (zone_type = 0; zone_type < MAX_NR_ZONES; zone_type++) {
            for zone_type in 0..MAX_NR_ZONES {
                // z = &NODE_DATA(nid)->node_zones[zone_type];
                // if (populated_zone(z)) {
                //         if (zone_type < ZONE_NORMAL)
                //                 low_kmem_size += z->present_pages;
                //         total_size += z->present_pages;
                // }
                if self.populated_zone(nid, zone_type) {
                    if zone_type < ZONE_NORMAL {
                        low_kmem_size += self.m.present_pages[nid][zone_type];
                    }
                    total_size += self.m.present_pages[nid][zone_type];
                }
            }
            // if (low_kmem_size &&
            //     total_size > average_size && /* ignore small node */
            //     low_kmem_size > total_size * 70/100)
            //         return ZONELIST_ORDER_NODE;
            if low_kmem_size != 0
                && total_size > average_size
                && low_kmem_size > total_size * 70 / 100
            {
                return ZONELIST_ORDER_NODE;
            }
        }
        // return ZONELIST_ORDER_ZONE;
        ZONELIST_ORDER_ZONE
    }

    /// `int local_memory_node(int node)`: the node of the first zone of
    /// `node_zonelist(node, GFP_KERNEL)` that `gfp_zone(GFP_KERNEL)` allows.
    pub fn local_memory_node(&self, node: usize) -> i32 {
        // z = first_zones_zonelist(node_zonelist(node, GFP_KERNEL),
        //                          gfp_zone(GFP_KERNEL), NULL);
        // return zone_to_nid(z->zone);
        match self.node_zonelists[node][ZONELIST_FALLBACK]
            .iter()
            .map_while(|z| *z)
            .find(|z| z.1 <= ZONE_NORMAL)
        {
            Some(z) => z.0 as i32,
            // (Linux would dereference NULL: no memory anywhere.)
            None => node as i32,
        }
    }

    /// The zonerefs of `node`'s list `which`, up to the terminator.
    pub fn zonerefs(&self, node: usize, which: usize) -> Vec<(usize, usize)> {
        self.node_zonelists[node][which]
            .iter()
            .map_while(|z| *z)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_machine_log() {
        let d = [
            [10, 20, 30, 40],
            [20, 10, 20, 30],
            [30, 20, 10, 20],
            [40, 30, 20, 10],
        ];
        let z = [0, 1000, 0];
        let m = Machine {
            nr_node_ids: 4,
            distance: d.iter().map(|r| r.to_vec()).collect(),
            possible: vec![true; 4],
            online: vec![true; 4],
            cpus: vec![false; 4],
            present_pages: vec![z, z, [0; 3], z],
            managed_pages: vec![z, z, [0; 3], z],
            boot_node: 0,
        };
        let mut k = Kernel::new(&m);
        k.build_all_zonelists();
        assert_eq!(
            k.log,
            "Fallback order for Node 0: 0 1 3 \n\
             Fallback order for Node 1: 1 0 3 \n\
             Fallback order for Node 2: 2 3 1 0 \n\
             Fallback order for Node 3: 3 1 0 \n\
             Built 4 zonelists, mobility grouping off.  Total pages: 3000\n"
        );
        assert_eq!(k.local_memory_node(2), 3);
        assert_eq!(
            k.zonerefs(2, ZONELIST_FALLBACK),
            vec![(3, 1), (1, 1), (0, 1)]
        );
        assert!(k.zonerefs(2, ZONELIST_NOFALLBACK).is_empty());
        assert_eq!(k.default_zonelist_order(), ZONELIST_ORDER_NODE);
    }
}
