package config

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateDoc = flag.Bool("update", false, "rewrite docs/CONFIG.md from the config code")

// docSections are the cluster file's sections, in the order docs/CONFIG.md
// presents them: the YAML path of each and the Go type behind it.
var docSections = []struct{ path, typ string }{
	{"", "Cluster"},
	{"nodes[]", "Node"},
	{"nodes[].broker", "Broker"},
	{"nodes[].client_tls", "ClientTLS"},
	{"link_tls, nodes[].broker.tls", "TLSFiles"},
	{"load_balancers", "LoadBalancers"},
	{"load_balancers.hosts[]", "LBHost"},
}

// TestConfigReference keeps docs/CONFIG.md what the config code says:
// every field of the cluster file with its type, default and meaning, taken
// from config.go's field comments and Default(). A field without a comment
// fails; so does a document that differs (go test ./internal/config -run
// TestConfigReference -update rewrites it).
func TestConfigReference(t *testing.T) {
	got, missing := configReference(t)
	if len(missing) > 0 {
		t.Fatalf("fields without a comment to document them: %s", strings.Join(missing, ", "))
	}
	path := filepath.Join("..", "..", "docs", "CONFIG.md")
	if *updateDoc {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(want) != got {
		t.Fatalf("docs/CONFIG.md differs from the config code: run go test ./internal/config -run TestConfigReference -update")
	}
}

func configReference(t *testing.T) (doc string, missing []string) {
	t.Helper()
	comments := fieldComments(t)
	var b strings.Builder
	b.WriteString("# The cluster file, field by field\n\n")
	b.WriteString("Generated from `internal/config/config.go` by `go test ./internal/config -run TestConfigReference -update`;\n")
	b.WriteString("the test fails when a field lacks its comment or this page is out of date. A zero or absent\n")
	b.WriteString("field takes its default. Sizes are bytes or `64MiB`-style; durations are Go durations (`2s`,\n")
	b.WriteString("`500ms`). Relative file paths are resolved against the cluster file's directory.\n")
	b.WriteString("`moha init` writes a valid, commented file from a list of hosts; `examples/cluster.yaml` is one.\n")
	defaults := sectionDefaults()
	for _, s := range docSections {
		title := s.path
		if title == "" {
			title = "top level"
		}
		fmt.Fprintf(&b, "\n## %s\n\n| key | type | default | meaning |\n|---|---|---|---|\n", title)
		rt := reflect.TypeOf(defaults[s.typ]).Elem()
		for i := range rt.NumField() {
			f := rt.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			comment := comments[s.typ+"."+f.Name]
			if comment == "" {
				missing = append(missing, s.typ+"."+f.Name)
			}
			def := defaultText(reflect.ValueOf(defaults[s.typ]).Elem().Field(i))
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", key, typeText(f.Type), def, strings.ReplaceAll(comment, "|", "\\|"))
		}
	}
	return b.String(), missing
}

// sectionDefaults returns, per section type, a value holding its defaults.
func sectionDefaults() map[string]any {
	c := Default()
	n := Node{Broker: Broker{Address: "<broker host>:1883"}, ClientTLS: &ClientTLS{}}
	n.applyDefaults()
	n.Broker.Address = DefaultBrokerAddress
	return map[string]any{
		"Cluster": &c, "Node": &n, "Broker": &n.Broker, "ClientTLS": n.ClientTLS,
		"TLSFiles": &TLSFiles{}, "LoadBalancers": &c.LoadBalancers, "LBHost": &LBHost{},
	}
}

func defaultText(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Struct:
		return "—"
	}
	if v.IsZero() {
		return "—"
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return "`" + s.String() + "`"
	}
	return fmt.Sprintf("`%v`", v.Interface())
}

func typeText(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(Duration(0)):
		return "duration"
	case t == reflect.TypeOf(ByteSize(0)):
		return "size"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Pointer, t.Kind() == reflect.Struct:
		return "section"
	}
	return t.Kind().String()
}

// fieldComments reads config.go and returns, per "Type.Field", the field's
// comment (the one above it, else the one after it on its line).
func fieldComments(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		for _, field := range st.Fields.List {
			text := field.Doc.Text()
			if text == "" {
				text = field.Comment.Text()
			}
			text = strings.Join(strings.Fields(text), " ")
			for _, name := range field.Names {
				// "StatusToken is the bearer token ..." reads "the bearer token ...".
				out[ts.Name.Name+"."+name.Name] = strings.TrimPrefix(text, name.Name+" is ")
			}
		}
		return false
	})
	return out
}
