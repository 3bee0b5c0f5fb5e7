//! Generates bindings for the system DPDK found through pkg-config and compiles the C wrappers for
//! its static-inline functions (rx/tx burst, mbuf helpers) plus a tiny hand shim.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Runs pkg-config ourselves: the `pkg-config` crate drops `-include rte_config.h`, without which
/// the DPDK headers see none of the build's RTE_* settings.
fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("dpdk-sys: cannot run pkg-config: {e}"));
    if !out.status.success() {
        panic!(
            "dpdk-sys: `pkg-config {} libdpdk` failed (install libdpdk-dev, see scripts/setup.sh): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)
        .expect("pkg-config output is not UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Pairs `-include FILE` into one argument each so both clang and cc keep them together.
fn cflags() -> Vec<String> {
    let raw = pkg_config(&["--cflags"]);
    let mut out = vec![];
    let mut it = raw.into_iter();
    while let Some(a) = it.next() {
        if a == "-include" {
            if let Some(f) = it.next() {
                out.push(format!("-include{f}"));
            }
        } else {
            out.push(a);
        }
    }
    out
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags = cflags();
    let wrapper = manifest.join("wrapper.h");
    let static_fns = out_dir.join("static_fns");

    let mut b = bindgen::Builder::default()
        .header(wrapper.to_str().unwrap())
        .clang_args(&cflags)
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_mbuf.*")
        .allowlist_function("rte_lcore.*")
        .allowlist_function("rte_thread_(un)?register")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_vhost.*")
        .allowlist_function("rte_dev_.*")
        .allowlist_function("rte_devargs_.*")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("rte_rdtsc.*")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_version")
        .allowlist_function("evs_.*")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_var("RTE_.*")
        // Packed protocol headers that bindgen cannot lay out; we never look inside them.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&static_fns)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    // Wrapping must not reach compiler intrinsics pulled in by the headers: only DPDK's own inlines.
    b = b.blocklist_function("_.*");
    let bindings = b.generate().expect("dpdk-sys: bindgen failed");
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("dpdk-sys: cannot write bindings");

    let mut cc = cc::Build::new();
    cc.file(static_fns.with_extension("c"))
        .file(manifest.join("shim.c"))
        .include(&manifest)
        .opt_level(3)
        .warnings(false);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("dpdk_sys_shim");

    for a in pkg_config(&["--libs"]) {
        if let Some(dir) = a.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
    // Only the libraries the switch calls; the PMDs (net_vhost, virtio_user, af_packet...) are
    // plugins that the EAL loads from its driver directory at init.
    for lib in [
        "rte_ethdev",
        "rte_mbuf",
        "rte_mempool",
        "rte_ring",
        "rte_vhost",
        "rte_net",
        "rte_kvargs",
        "rte_telemetry",
        "rte_eal",
    ] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
