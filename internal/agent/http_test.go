package agent_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/config"
)

// TestStatusNeedsLoopbackOrToken (issue 15 §6): /status (client ids,
// filters, log text) answers loopback clients; from another address it
// wants the cluster's status token, and a refusal is counted. /readyz and
// /metrics stay open, and /metrics names no client and no topic.
func TestStatusNeedsLoopbackOrToken(t *testing.T) {
	const token = "0123456789abcdef-status"
	c := startCluster(t, 2, func(cl *config.Cluster) { cl.StatusToken = token })
	sub := connect(t, addr(c, "node1"), "http-secret-client")
	sub.subscribe("http/secret/topic", 1)
	peerKnows(t, c, "node2", "node1", "http/secret/topic", true)
	h := agentOf(c, "node1").Handler()
	get := func(path, remote, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.RemoteAddr = remote
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	const far = "10.9.8.7:40000"
	for _, tc := range []struct {
		name, remote, auth string
		want               int
	}{
		{"loopback", "127.0.0.1:40000", "", http.StatusOK},
		{"loopback v6", "[::1]:40000", "", http.StatusOK},
		{"another host, no token", far, "", http.StatusUnauthorized},
		{"another host, wrong token", far, "Bearer nope-nope-nope-nope", http.StatusUnauthorized},
		{"another host, token", far, "Bearer " + token, http.StatusOK},
	} {
		if got := get("/status", tc.remote, tc.auth).Code; got != tc.want {
			t.Errorf("%s: /status answered %d, want %d", tc.name, got, tc.want)
		}
	}
	if n := metricSum(t, c.MustNode("node1").HTTP, "moha_security_events_total"); n != 2 {
		t.Errorf("security events counted %v, want the 2 refusals", n)
	}
	if got := get("/readyz", far, "").Code; got != http.StatusOK {
		t.Errorf("/readyz from another host: %d, want 200 (HAProxy checks it)", got)
	}
	metrics := get("/metrics", far, "")
	if metrics.Code != http.StatusOK {
		t.Fatalf("/metrics from another host: %d", metrics.Code)
	}
	body := metrics.Body.String()
	ids := agentOf(c, "node1").ClientIDs()
	for _, secret := range append([]string{"http-secret-client", "http/secret/topic"}, ids[agent.RoleData], ids[agent.RoleLog]) {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics shows %q", secret)
		}
	}
}

// TestStatusKeysAreSnakeCase (issue 18 §6): every key of /status is
// snake_case, and the document says which build answers.
func TestStatusKeysAreSnakeCase(t *testing.T) {
	c := startCluster(t, 2)
	resp, err := http.Get("http://" + c.MustNode("node1").HTTP + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if !snake.MatchString(k) {
					t.Errorf("/status key %s.%s is not snake_case", path, k)
				}
				walk(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		}
	}
	walk("", doc)
	if v, _ := doc.(map[string]any)["version"].(map[string]any); v["version"] == "" || v["go"] == "" {
		t.Errorf("/status version: %v", v)
	}
}
