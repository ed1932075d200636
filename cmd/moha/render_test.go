package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeRenderCluster writes a cluster file with one node and two load balancer hosts.
func writeRenderCluster(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "cluster.yaml")
	data := `name: shop
secret: 0123456789abcdef0123
nodes:
  - name: n1
    broker: {address: 10.1.0.11:1883}
load_balancers:
  floating_ip: 10.1.0.100/24
  interface: ens3
  hosts:
    - {name: lb1, address: 10.1.0.2}
    - {name: lb2, address: 10.1.0.3}
`
	if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func renderCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"render"}, args...), &out, &errOut)
	return out.String(), err
}

func TestRenderKeepalived(t *testing.T) {
	cfg := writeRenderCluster(t)
	out, err := renderCLI(t, "keepalived", "--cluster", cfg, "--lb", "lb2", "--unicast")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"    router_id lb2\n", "    priority 100\n", "    interface ens3\n",
		"        10.1.0.100/24 dev ens3\n", "    unicast_src_ip 10.1.0.3\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered keepalived.conf lacks %q:\n%s", want, out)
		}
	}
	if _, err := renderCLI(t, "keepalived", "--cluster", cfg); err == nil || !strings.Contains(err.Error(), "--lb") {
		t.Errorf("render keepalived without --lb: %v, want an error naming --lb", err)
	}
	if _, err := renderCLI(t, "keepalived", "--cluster", cfg, "--lb", "lb3"); err == nil || !strings.Contains(err.Error(), "lb1, lb2") {
		t.Errorf("render keepalived --lb lb3: %v, want an error listing lb1, lb2", err)
	}
}

func TestRenderSystemd(t *testing.T) {
	cfg := writeRenderCluster(t)
	out, err := renderCLI(t, "systemd", "--cluster", cfg, "--node", "n1", "--binary", "/opt/moha")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### moha-agent.service\n", "### mosquitto.service.d/moha.conf\n",
		"ExecStart=/opt/moha agent --cluster /etc/moha/cluster.yaml --node n1\n",
		"ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/moha.conf\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("printed units lack %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	out, err = renderCLI(t, "systemd", "--cluster", cfg, "--node", "n1", "--dir", dir, "--mosquitto-conf", "/etc/m.conf")
	if err != nil {
		t.Fatal(err)
	}
	agent, dropIn := filepath.Join(dir, "moha-agent.service"), filepath.Join(dir, "mosquitto.service.d", "moha.conf")
	if out != agent+"\n"+dropIn+"\n" {
		t.Errorf("printed %q, want the two paths", out)
	}
	if data, err := os.ReadFile(dropIn); err != nil || !strings.Contains(string(data), "mosquitto -c /etc/m.conf\n") {
		t.Errorf("drop-in: %v\n%s", err, data)
	}
	if _, err := os.Stat(agent); err != nil {
		t.Error(err)
	}
	if _, err := renderCLI(t, "systemd", "--cluster", cfg); err == nil || !strings.Contains(err.Error(), "--node") {
		t.Errorf("render systemd without --node: %v, want an error naming --node", err)
	}
	if _, err := renderCLI(t, "systemd", "--cluster", cfg, "--node", "n1", "--binary", "moha"); err == nil {
		t.Error("render systemd with a relative --binary succeeded")
	}
}

func TestRenderMosquittoLogFileAndHAProxy(t *testing.T) {
	cfg := writeRenderCluster(t)
	out, err := renderCLI(t, "mosquitto", "--cluster", cfg, "--node", "n1", "--log-file", "/var/log/mosquitto/m.log")
	if err != nil || !strings.Contains(out, "log_dest file /var/log/mosquitto/m.log\n") {
		t.Errorf("render mosquitto --log-file: %v\n%s", err, out)
	}
	out, err = renderCLI(t, "haproxy", "--cluster", cfg)
	if err != nil || !strings.Contains(out, "server n1 10.1.0.11:1883 check port 9101") {
		t.Errorf("render haproxy: %v\n%s", err, out)
	}
	if _, err := renderCLI(t, "nginx", "--cluster", cfg); err == nil {
		t.Error("render nginx succeeded")
	}
}
