package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks Parse never panics, and that whatever it accepts survives
// Marshal + Parse unchanged.
func FuzzParse(f *testing.F) {
	full, err := os.ReadFile(filepath.Join("testdata", "cluster.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(full),
		minimalYAML,
		"",
		"secret: 0123456789abcdef\nnodes: [{name: a}, {name: b, broker: {address: '[::1]:1884'}, cluster: '[::1]:1}, http: '[::1]:2'}]",
		"secret: 0123456789abcdef\nbuffer_bytes: 1536\ninterest_grace: 1h2m3.5s\nnodes: [{name: a, broker: {username: u, password: p, keepalive: 65535s}}]",
		"secret: 0123456789abcdef\nnodes: [{name: a}]\nload_balancers: {floating_ip: 'fd00::1/64', hosts: [{name: x, address: h.example}]}",
		"name: &n abc\nsecret: 0123456789abcdef\nnodes: [{name: *n}]",
		"window: 1e3",
	} {
		f.Add([]byte(seed))
	}
	base, err := filepath.Abs("testdata")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, base)
		if err != nil {
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of an accepted cluster: %v", err)
		}
		again, err := Parse(out, base)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\ninput:\n%s\nmarshalled:\n%s", err, data, out)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip changed the cluster:\n got %#v\nwant %#v\nmarshalled:\n%s", again, c, out)
		}
	})
}

// FuzzParseByteSize checks ParseByteSize never panics and that String gives back a text
// that parses to the same size.
func FuzzParseByteSize(f *testing.F) {
	for _, seed := range []string{"0", "1048576", "64MiB", "512 kib", "1GiB", "9223372036854775807", "8388607TiB", "1.5GiB", "MiB"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		size, err := ParseByteSize(text)
		if err != nil {
			return
		}
		if size < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, negative", text, size)
		}
		again, err := ParseByteSize(size.String())
		if err != nil || again != size {
			t.Fatalf("ParseByteSize(%q) = %d; its String %q parses to %d, %v", text, size, size.String(), again, err)
		}
	})
}
