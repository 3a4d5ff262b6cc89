# Where a GPU step's time goes, per kernel: sums the per-launch lines of cubecl's profiler
# ("| 1.23ms | KernelName ...", written with CUBECL_DEBUG_OPTION=profile) that come after the
# log's last autotune table ("| Total ..."), so autotune's trial runs are left out; prints
# milliseconds, launches and share per kernel name (hash suffix dropped). Used by benches/gpu.sh:
#   awk -f benches/gpu_kernels.awk cubecl.log | sort -rn | head -25
/^\| Total / { delete ms; delete count; total = 0; next }
/^\| [0-9.]+(ns|µs|ms|s) +\| / {
    split($0, field, "|")
    duration = field[2]
    gsub(/ /, "", duration)
    value = duration + 0
    if (duration ~ /ns$/) value /= 1e6
    else if (duration ~ /µs$/) value /= 1e3
    else if (duration !~ /ms$/) value *= 1e3
    name = field[3]
    sub(/^ +/, "", name)
    sub(/ .*/, "", name)
    sub(/_[0-9a-f]+$/, "", name)
    ms[name] += value
    count[name]++
    total += value
}
END {
    for (name in ms)
        printf "%10.2f ms %7d launches %5.1f%%  %s\n", ms[name], count[name], 100 * ms[name] / total, name
    printf "%10.2f ms in all kernels after the last autotune table\n", total
}
