package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/imbridge/imbridge/app"
)

// serveFlagNames are the flags `imbridge serve` takes.
func serveFlagNames() map[string]bool {
	fs, _ := newServeFlags(&app.Config{})
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// checkServeArgs fails the test for each --flag in args that serve does not take.
func checkServeArgs(t *testing.T, where string, args []string) {
	t.Helper()
	names := serveFlagNames()
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if !names[name] {
			t.Errorf("%s: serve has no flag --%s", where, name)
		}
	}
}

// TestDeployManifests: the Kubernetes manifests parse, name only flags and environment twins serve
// takes, and probe the bridge's health endpoints on its ports; the systemd unit runs a serve
// command serve accepts.
func TestDeployManifests(t *testing.T) {
	files, err := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	names := serveFlagNames()
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		workloads := 0
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Image string   `yaml:"image"`
								Args  []string `yaml:"args"`
								Env   []struct {
									Name string `yaml:"name"`
								} `yaml:"env"`
								Ports []struct {
									Name          string `yaml:"name"`
									ContainerPort int    `yaml:"containerPort"`
								} `yaml:"ports"`
								ReadinessProbe struct {
									HTTPGet struct {
										Path string `yaml:"path"`
									} `yaml:"httpGet"`
								} `yaml:"readinessProbe"`
								LivenessProbe struct {
									HTTPGet struct {
										Path string `yaml:"path"`
									} `yaml:"httpGet"`
								} `yaml:"livenessProbe"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			where := filepath.Base(file) + " " + doc.Kind + "/" + doc.Metadata.Name
			if doc.APIVersion == "" || doc.Kind == "" || doc.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or name", file)
			}
			for _, c := range doc.Spec.Template.Spec.Containers {
				workloads++
				if len(c.Args) == 0 || c.Args[0] != "serve" {
					t.Errorf("%s: args %v; want serve ...", where, c.Args)
				}
				checkServeArgs(t, where, c.Args)
				for _, e := range c.Env {
					if name, ok := strings.CutPrefix(e.Name, "IMBRIDGE_"); ok && !names[strings.ToLower(strings.ReplaceAll(name, "_", "-"))] {
						t.Errorf("%s: %s is no flag's twin", where, e.Name)
					}
				}
				ports := map[string]int{}
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
				}
				if ports["http"] != 8080 || ports["grpc"] != 9090 {
					t.Errorf("%s: ports %v; want http 8080 and grpc 9090, the defaults", where, ports)
				}
				if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
					t.Errorf("%s: probes %q and %q; want /readyz and /healthz", where, c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
				}
			}
		}
		f.Close()
		if workloads == 0 {
			t.Errorf("%s: no workload runs the bridge", file)
		}
	}

	unit, err := os.ReadFile("../../deploy/systemd/imbridge.service")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	found := false
	for sc.Scan() {
		if cmd, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			found = true
			args := strings.Fields(cmd)
			if len(args) < 2 || args[1] != "serve" {
				t.Errorf("systemd ExecStart %q; want imbridge serve ...", cmd)
			}
			checkServeArgs(t, "systemd unit", args)
		}
	}
	if !found {
		t.Error("systemd unit without ExecStart")
	}
}

// TestDeployBuild builds the binary as the Dockerfile does (deploy/build.sh) and starts it: it
// serves, says it is ready through its own healthcheck command (the image's HEALTHCHECK) and
// reports the version it was stamped with. It builds without the race detector and cgo, so it runs
// under make check-deploy (IMBRIDGE_DEPLOY_CHECK=1), not make test.
func TestDeployBuild(t *testing.T) {
	if os.Getenv("IMBRIDGE_DEPLOY_CHECK") == "" {
		t.Skip("make check-deploy runs it")
	}
	out := t.TempDir()
	build := exec.Command("sh", "deploy/build.sh", out, "v9.9.9-test")
	build.Dir = "../.."
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, b)
	}
	bin := filepath.Join(out, "imbridge")
	if b, err := exec.Command("file", bin).CombinedOutput(); err == nil && !strings.Contains(string(b), "statically linked") {
		t.Errorf("not a static binary: %s", b)
	}
	p := startBinary(t, bin, t.TempDir())
	hc, err := exec.Command(bin, "healthcheck", "--url", "http://"+p.httpAddr+"/readyz").CombinedOutput()
	if err != nil || !strings.Contains(string(hc), `"ready"`) {
		t.Errorf("healthcheck: %v %s", err, hc)
	}
	if v, _ := exec.Command(bin, "--version").Output(); string(v) != "imbridge v9.9.9-test\n" {
		t.Errorf("--version: %q", v)
	}
	_ = p.cmd.Process.Kill()
	_ = p.wait(t)
	if err := exec.Command(bin, "healthcheck", "--url", "http://"+p.httpAddr+"/readyz").Run(); err == nil {
		t.Error("healthcheck of a stopped bridge passed")
	}
}
