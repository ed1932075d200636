package plainbroker_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/plainbroker"
	"github.com/moha-project/moha/internal/testkit"
)

// TestMosquittoAcceptsTheConfig starts mosquitto on a rendered config with
// every option set and sees that it listens: mosquitto has no config check
// mode, and exits at once on a line it refuses. An external test package,
// so that the leaf package itself imports nothing of the project.
func TestMosquittoAcceptsTheConfig(t *testing.T) {
	bin, err := launch.FindBinary("mosquitto")
	if err != nil {
		testkit.SkipUnavailable(t, "mosquitto is missing: %v", err)
	}
	addr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	text, err := plainbroker.Config(plainbroker.Options{
		Addr:      addr,
		Comment:   "TestMosquittoAcceptsTheConfig",
		User:      plainbroker.RunAs(),
		MaxQueued: 1000000,
		Extra:     []string{"max_inflight_messages 1000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := launch.Start("mosquitto", filepath.Join(dir, "mosquitto.log"), bin, "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := launch.WaitTCP(ctx, addr, p); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
		t.Fatalf("mosquitto refuses the config: %v\n%s\n%s", err, text, log)
	}
}
