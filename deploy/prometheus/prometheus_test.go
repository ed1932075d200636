// Package prometheus holds the alert rules (alerts.yml) and, beside them in
// deploy/grafana, the dashboard for a moha cluster; its test runs them on a
// real Prometheus scraping a real cluster.
package prometheus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// TestAlertsAndDashboard (issue 18 §5): promtool accepts the rules; a real
// Prometheus scrapes a two-node cluster's agents; every alert expression and
// every dashboard query evaluates without error, and every dashboard query
// returns data; stopping an agent fires MohaAgentDown.
func TestAlertsAndDashboard(t *testing.T) {
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		testkit.SkipUnavailable(t, "prometheus is not installed (apt-get install prometheus)")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testkit.SkipUnavailable(t, "promtool is not installed (apt-get install prometheus)")
	}
	rules, err := filepath.Abs("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: -1, Dir: t.TempDir(), AgentBinary: testkit.MohaBinary(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var targets []string
	for _, n := range c.Config.Nodes {
		targets = append(targets, fmt.Sprintf("%q", n.HTTP))
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [%q]\nscrape_configs:\n  - job_name: moha\n    static_configs:\n      - targets: [%s]\n",
		rules, strings.Join(targets, ", "))
	confFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	cmd := exec.Command(prometheus, "--config.file="+confFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	log := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log)
		}
	})
	api := func(query string) (status string, results int, err error) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return "", 0, err
		}
		if r.Status != "success" {
			return r.Status, 0, fmt.Errorf("%s", r.Error)
		}
		return r.Status, len(r.Data.Result), nil
	}
	testkit.WaitFor(t, 30*time.Second, "prometheus scraping both agents, and rates over two scrapes", func() bool {
		_, n, err := api(`up{job="moha"} == 1`)
		_, rates, _ := api(`rate(moha_forward_messages_total[1m])`)
		return err == nil && n == 2 && rates > 0
	})

	for _, expr := range alertExprs(t, rules) {
		if _, _, err := api(expr); err != nil {
			t.Errorf("alert expression %q: %v", expr, err)
		}
	}
	for _, expr := range dashboardExprs(t) {
		expr = strings.ReplaceAll(expr, "$__rate_interval", "1m")
		if _, n, err := api(expr); err != nil || n == 0 {
			t.Errorf("dashboard query %q: %d series, %v", expr, n, err)
		}
	}

	c.StopAgent("node2")
	testkit.WaitFor(t, 60*time.Second, "MohaAgentDown firing", func() bool {
		_, n, err := api(`ALERTS{alertname="MohaAgentDown",alertstate="firing"}`)
		return err == nil && n == 1
	})
}

func alertExprs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	if len(out) == 0 {
		t.Fatal("no alert rules")
	}
	return out
}

func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "grafana", "moha.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("deploy/grafana/moha.json: %v", err)
	}
	var out []string
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			out = append(out, q.Expr)
		}
	}
	if len(out) == 0 {
		t.Fatal("no dashboard queries")
	}
	return out
}
