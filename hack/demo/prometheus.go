package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/workerpod"
)

// keyQueries are the queries the demo prints next to Prometheus' address.
var keyQueries = []string{
	"sum(rate(delauto_queue_handled_total[1m]))",
	"histogram_quantile(0.95, sum by (le) (rate(delauto_queue_pickup_latency_seconds_bucket[5m])))",
	"sum by (campaign, shard) (delauto_campaign_shard_due_now)",
	"ALERTS",
}

// startPrometheus runs bin/prometheus (built by `make prometheus-tools`)
// scraping the workers' ops ports and the operators' health ports through a
// file of targets kept current from the running pods, with the chart's
// alert rules loaded. It returns Prometheus' address.
func startPrometheus(ctx context.Context, sys *localcluster.System, bin, repo, dir string) (string, error) {
	exe := filepath.Join(bin, "prometheus")
	if _, err := os.Stat(exe); err != nil {
		return "", fmt.Errorf("no %s (make prometheus-tools builds it)", exe)
	}
	pd := filepath.Join(dir, "prometheus")
	if err := os.MkdirAll(pd, 0o755); err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	targets := filepath.Join(pd, "workers.json")
	cfg := fmt.Sprintf(`global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [%q]
scrape_configs:
- job_name: delauto-workers
  file_sd_configs: [{files: [%q], refresh_interval: 5s}]
`, filepath.Join(repo, "charts", "delauto", "files", "prometheus-rules.yaml"), targets)
	if err := os.WriteFile(filepath.Join(pd, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		return "", err
	}
	writeTargets := func() {
		type group struct {
			Targets []string          `json:"targets"`
			Labels  map[string]string `json:"labels"`
		}
		var gs []group
		for _, p := range sys.Runner.Pods() {
			if p.Labels[controllers.LabelComponent] != controllers.ComponentWorker {
				continue
			}
			gs = append(gs, group{Targets: []string{net.JoinHostPort(p.Status.PodIP, fmt.Sprint(workerpod.OpsPort))},
				Labels: map[string]string{"namespace": p.Namespace, "pod": p.Name, "campaign": p.Labels[controllers.LabelCampaign]}})
		}
		data, _ := json.Marshal(gs)
		_ = os.WriteFile(targets+".tmp", data, 0o644)
		_ = os.Rename(targets+".tmp", targets)
	}
	writeTargets()
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, exe, "--config.file="+filepath.Join(pd, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(pd, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = cmd.Wait()
				logf.Close()
				return
			case <-t.C:
				writeTargets()
			}
		}
	}()
	url := "http://" + addr
	for i := 0; i < 50; i++ {
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return url, nil
}
