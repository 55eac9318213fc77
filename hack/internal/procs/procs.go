// Package procs reads the benchmarks' process tree from /proc: which
// processes a benchmark started (the test services, PostgreSQL's backends,
// the program under test) and the CPU time each used.
package procs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ on Linux, the unit of /proc/<pid>/stat's times.
const clockTicks = 100

// Process is one process as /proc/<pid>/stat describes it.
type Process struct {
	PID, PPID int
	// Command is the process's command name (comm).
	Command string
	// CPUSeconds is its user plus system time so far.
	CPUSeconds float64
}

// Threads returns the thread ids of process pid (its tasks in /proc). A
// scheduling policy set on a pid applies to that one thread only; a
// multi-threaded program such as a Go server needs it on each.
func Threads(pid int) []int {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*", pid))
	out := make([]int, 0, len(dirs))
	for _, d := range dirs {
		if tid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// All returns every live process of the machine by pid.
func All() map[int]Process {
	all := map[int]Process{}
	files, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range files {
		if p, ok := parseStat(f); ok {
			all[p.PID] = p
		}
	}
	return all
}

// Descendants returns the live processes whose ancestry reaches root, root
// included.
func Descendants(root int) []Process {
	all := All()
	var out []Process
	for pid, p := range all {
		for hops := 0; pid > 1 && hops < 64; hops++ {
			if pid == root {
				out = append(out, p)
				break
			}
			pid = all[pid].PPID
		}
	}
	return out
}

// parseStat reads "pid (comm) state ppid ... utime stime ...".
func parseStat(file string) (Process, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Process{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return Process{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 13 {
		return Process{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return Process{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return Process{PID: pid, PPID: ppid, Command: s[open+1 : closing], CPUSeconds: (utime + stime) / clockTicks}, true
}

// CPU is CPU seconds by command name.
type CPU map[string]float64

// Args is the command line of process pid (nil once it ended).
func Args(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// CPUSnapshot sums the CPU seconds of this process and its descendants by
// command name, this process's under self. Processes that ended (short
// PostgreSQL backends) are missed.
func CPUSnapshot(self string) CPU {
	me := os.Getpid()
	return CPUSnapshotBy(func(p Process) string {
		if p.PID == me {
			return self
		}
		return p.Command
	})
}

// CPUSnapshotBy sums the CPU seconds of this process and its descendants
// by the name name gives each.
func CPUSnapshotBy(name func(Process) string) CPU {
	out := CPU{}
	for _, p := range Descendants(os.Getpid()) {
		out[name(p)] += p.CPUSeconds
	}
	return out
}

// MachineCPU is the machine's CPU seconds so far, busy (neither idle nor
// waiting for I/O) and in all, summed over its cores (/proc/stat).
func MachineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest time is in user)
	for i, v := range f[1:min(len(f), 9)] {
		x, _ := strconv.ParseFloat(v, 64)
		total += x / clockTicks
		if i != 3 && i != 4 { // idle, iowait
			busy += x / clockTicks
		}
	}
	return busy, total
}

// AllCPUBy sums the CPU seconds of every process of the machine by the
// name name gives each (a local cluster's control plane is not a
// descendant of the program that started it).
func AllCPUBy(name func(Process) string) CPU {
	out := CPU{}
	for _, p := range All() {
		out[name(p)] += p.CPUSeconds
	}
	return out
}

// Minus is the CPU used since before.
func (c CPU) Minus(before CPU) CPU {
	out := CPU{}
	for k, v := range c {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// Add adds d to c.
func (c CPU) Add(d CPU) {
	for k, v := range d {
		c[k] += v
	}
}

// String lists the CPU seconds by process, largest first, after the total.
func (c CPU) String() string {
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

// LoadAvg is the machine's load average over 1, 5 and 15 minutes.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// MemGiB is the machine's memory, e.g. "24 GiB".
func MemGiB() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "? GiB"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return fmt.Sprintf("%.0f GiB", kb/1024/1024)
		}
	}
	return "? GiB"
}
