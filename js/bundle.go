package js

import (
	"bytes"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// WorkerBundle returns the worker's boot script with its imports inlined: worker.js and every
// module it imports (router.js, events.js, abi.js, wasi.js), as one ES module with no import
// statements. The server serves it at {prefix}worker.js, so that a worker starts after one
// request instead of a chain of three (worker.js, then router.js and abi.js, then events.js and
// wasi.js: each a round trip, and on every start, since the boot script is never cached) and
// begins fetching vault.wasm at once. See RATIONALE.md "Why is the boot script one file?".
//
// Each imported module becomes a function scope that returns its exports; an import becomes a
// const destructuring of them. That is exact for our modules, whose exports are never
// reassigned (the bundler refuses `export let` and any import or export form it does not
// know, and import() or import.meta outside the entry). worker.js itself comes last, in a block
// of its own (its names stay out of the modules' reach), its ticket placeholder line unchanged.
func WorkerBundle() ([]byte, error) {
	bundleOnce.once.Do(func() { bundleOnce.b, bundleOnce.err = bundle(Files, "worker.js") })
	return bundleOnce.b, bundleOnce.err
}

var bundleOnce struct {
	once sync.Once
	b    []byte
	err  error
}

var (
	importLine = regexp.MustCompile(`^import \{ ([A-Za-z_$][\w$]*(?:, [A-Za-z_$][\w$]*)*) \} from "\./([a-z]+\.js)";$`)
	exportDecl = regexp.MustCompile(`^export (?:const|class|function|async function) ([A-Za-z_$][\w$]*)\b`)
	// Anything else that looks like an import or export statement at the start of a line.
	otherModuleSyntax = regexp.MustCompile(`^\s*(?:import\s*[\w{*"']|export\b)`)
	// Module-relative forms that would resolve differently once inlined (allowed in the entry,
	// which is served at its own URL).
	moduleRelative = regexp.MustCompile(`\bimport\s*(?:\(|\.\s*meta\b)`)
)

type module struct {
	name    string
	body    []string // lines, import statements removed, "export " dropped
	imports []moduleImport
	exports []string
}

type moduleImport struct {
	from  string
	names string // "a, b, c" as written
}

func parseModule(fsys fs.FS, name string, entry bool) (*module, error) {
	src, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("js: bundle: %s: %w", name, err)
	}
	m := &module{name: name}
	for i, line := range strings.Split(string(src), "\n") {
		if g := importLine.FindStringSubmatch(line); g != nil {
			m.imports = append(m.imports, moduleImport{from: g[2], names: g[1]})
			continue
		}
		if g := exportDecl.FindStringSubmatch(line); g != nil {
			m.exports = append(m.exports, g[1])
			line = strings.TrimPrefix(line, "export ")
		} else if otherModuleSyntax.MatchString(line) {
			return nil, fmt.Errorf("js: bundle: %s:%d: unsupported import or export form: %q", name, i+1, line)
		}
		if !entry && moduleRelative.MatchString(line) && !strings.HasPrefix(strings.TrimSpace(line), "*") && !strings.HasPrefix(strings.TrimSpace(line), "//") {
			return nil, fmt.Errorf("js: bundle: %s:%d: import() or import.meta outside the entry: %q", name, i+1, line)
		}
		m.body = append(m.body, line)
	}
	return m, nil
}

func bundle(fsys fs.FS, entry string) ([]byte, error) {
	mods := map[string]*module{}
	var order []string // dependencies before their importers
	visiting := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if mods[name] != nil {
			return nil
		}
		if visiting[name] {
			return fmt.Errorf("js: bundle: import cycle through %s", name)
		}
		visiting[name] = true
		m, err := parseModule(fsys, name, name == entry)
		if err != nil {
			return err
		}
		for _, im := range m.imports {
			if err := visit(im.from); err != nil {
				return err
			}
		}
		mods[name] = m
		order = append(order, name)
		return nil
	}
	if err := visit(entry); err != nil {
		return nil, err
	}
	// Every imported name must be exported by its module.
	for _, name := range order {
		for _, im := range mods[name].imports {
			for _, n := range strings.Split(im.names, ", ") {
				if !slices.Contains(mods[im.from].exports, n) {
					return nil, fmt.Errorf("js: bundle: %s imports %s, which %s does not export", name, n, im.from)
				}
			}
		}
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Sessionvault's vault worker: %s with its imports inlined (js.WorkerBundle).\n", entry)
	writeImports := func(m *module) {
		for _, im := range m.imports {
			fmt.Fprintf(&b, "const { %s } = %s;\n", im.names, scopeName(im.from))
		}
	}
	for _, name := range order {
		m := mods[name]
		if name == entry {
			// In a block of its own, so that no inlined module can see the entry's top-level
			// names (the join ticket among them), as in the module graph.
			b.WriteString("\n// ---- " + name + "\n{\n")
			writeImports(m)
			b.WriteString(strings.Join(m.body, "\n"))
			b.WriteString("\n}\n")
			break
		}
		fmt.Fprintf(&b, "\n// ---- %s\nconst %s = (() => {\n", name, scopeName(name))
		writeImports(m)
		b.WriteString(strings.Join(m.body, "\n"))
		fmt.Fprintf(&b, "\nreturn { %s };\n})();\n", strings.Join(m.exports, ", "))
	}
	return b.Bytes(), nil
}

// scopeName is the bundle's name for a module's exports object ("abi.js" -> "$sv_abi").
func scopeName(file string) string { return "$sv_" + strings.TrimSuffix(file, ".js") }
