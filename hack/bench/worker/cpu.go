package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// cpuTimes is CPU seconds (user+system) by process name, for this process
// and its descendants (the test services it started), read from /proc.
type cpuTimes map[string]float64

const clockTicks = 100 // USER_HZ on Linux

func cpuSnapshot() cpuTimes {
	type proc struct {
		ppid int
		comm string
		cpu  float64
	}
	procs := map[int]proc{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		f := strings.Fields(s[r+2:])
		if len(f) < 13 {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(s[:l])[0])
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		procs[pid] = proc{ppid: ppid, comm: s[l+1 : r], cpu: (ut + st) / clockTicks}
	}
	self := os.Getpid()
	mine := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid == self {
				return true
			}
			pid = procs[pid].ppid
		}
		return false
	}
	out := cpuTimes{}
	for pid, p := range procs {
		if !mine(pid) {
			continue
		}
		name := p.comm
		if pid == self {
			name = "bench (worker, simulator)"
		}
		out[name] += p.cpu
	}
	return out
}

// minus is the CPU used since before.
func (c cpuTimes) minus(before cpuTimes) cpuTimes {
	out := cpuTimes{}
	for k, v := range c {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// add adds d to c.
func (c cpuTimes) add(d cpuTimes) {
	for k, v := range d {
		c[k] += v
	}
}

// String lists the CPU seconds by process, largest first, with the total.
func (c cpuTimes) String() string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	total := 0.0
	for k, v := range c {
		if v > 0.05 {
			l = append(l, kv{k, v})
			total += v
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	parts := []string{fmt.Sprintf("total %.1fs", total)}
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%s %.1fs", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}
