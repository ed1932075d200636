package cockpit_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/testkit"
)

// TestStatusPageInChromium (issue 18 §4): the page an agent serves at /
// draws every node and every link of a three-node cluster in a real
// headless Chromium; once node3's agent is killed, the next load of the page
// shows it unreachable and its links down. A screenshot of each state goes
// to the test's artifact directory (go test -artifacts).
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testkit.SkipUnavailable(t, "chromium is not installed (apt-get install chromium)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 3, LBPort: -1, Dir: t.TempDir(), AgentBinary: testkit.MohaBinary(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	url := "http://" + c.MustNode("node1").HTTP + "/"
	artifacts := t.ArtifactDir()
	args := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=1500", "--window-size=700,760"}
	load := func() string {
		t.Helper()
		dom, err := exec.CommandContext(ctx, chromium, append(args, "--dump-dom", url)...).Output()
		if err != nil {
			t.Fatalf("chromium --dump-dom %s: %v", url, err)
		}
		return string(dom)
	}
	screenshot := func(name string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, chromium, append(args, "--screenshot="+filepath.Join(artifacts, name), url)...).CombinedOutput(); err != nil {
			t.Fatalf("chromium --screenshot: %v\n%s", err, out)
		}
	}
	state := func(dom, attr, name string) string {
		m := regexp.MustCompile(`data-` + attr + `="` + name + `" data-state="([a-z-]+)"`).FindStringSubmatch(dom)
		if m == nil {
			return ""
		}
		return m[1]
	}
	var dom string
	testkit.WaitFor(t, 20*time.Second, "the page to draw three ready nodes and three links up", func() bool {
		dom = load()
		for _, n := range []string{"node1", "node2", "node3"} {
			if state(dom, "node", n) != "ready" {
				return false
			}
		}
		for _, l := range []string{"node1-node2", "node1-node3", "node2-node3"} {
			if state(dom, "link", l) != "up" {
				return false
			}
		}
		return true
	})
	screenshot("healthy.png")

	killed := time.Now()
	c.AgentProcess("node3").Kill()
	dom = load()
	shown := time.Since(killed)
	screenshot("node3-killed.png")
	if state(dom, "node", "node3") != "unreachable" || state(dom, "link", "node1-node3") != "down" || state(dom, "link", "node2-node3") != "down" {
		t.Fatalf("the first load after node3's agent was killed does not show it down:\n%s", dom)
	}
	if state(dom, "node", "node2") != "ready" || state(dom, "link", "node1-node2") != "up" {
		t.Fatalf("node2 or its link shown wrong:\n%s", dom)
	}
	t.Logf("node3 shown unreachable %v after the kill (a fresh headless Chromium loading the page; an open page refreshes every second); screenshots in %s", shown.Round(10*time.Millisecond), artifacts)
	if _, err := os.Stat(filepath.Join(artifacts, "node3-killed.png")); err != nil {
		t.Fatal(err)
	}
}
