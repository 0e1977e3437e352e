// jobspec_check: reads a Nomad job file the way Nomad's own parser does, and
// prints what it found as JSON, or the problems and exit status 1.
//
// Nomad has no Debian package and its module cannot be fetched here, so this
// is the most faithful check within reach (crates/cli/tests/export.rs says
// why and what it cannot catch):
//
//   - The file is parsed by HashiCorp's HCL v2 (Debian's
//     golang-github-hashicorp-hcl-v2-dev), the parser Nomad's jobspec2
//     uses, and decoded with gohcl into structs whose `hcl` tags are
//     Nomad's own, copied from hashicorp/nomad's api package (api/jobs.go
//     Job, api/tasks.go TaskGroup, Task, TaskArtifact, Template,
//     RestartPolicy, api/resources.go Resources, NetworkResource, Port,
//     api/services.go Service, ServiceCheck) and, for the exec driver's
//     `config`, drivers/exec/driver.go's taskConfigSpec. gohcl refuses any
//     attribute or block those structs do not name, and any value of the
//     wrong type, as jobspec2 does.
//   - The rules Nomad applies when the job is registered and that this
//     export could break are checked as Nomad states them in
//     nomad/structs: RestartPolicy.Validate (mode delay or fail, interval at
//     least 5 s, attempts × delay within the interval), ServiceCheck
//     (interval and timeout at least 1 s, types; the nomad provider runs
//     http and tcp checks only), port labels a service or check names exist
//     in the group's network, durations as Go durations.
//   - Each template's data is parsed as a Go text/template (consul-template,
//     which Nomad embeds, is one) and executed with `nomadVar` answering the
//     variables given with -var, so the test can compare the file Nomad
//     would write with the instance's config file.
//
// Usage: jobspec_check [-var KEY=VALUE]... JOB.hcl
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// A block whose body is a map of strings (meta, env, artifact options):
// jobspec2 decodes these as attributes with string values.
type stringMap struct {
	Body hcl.Body `hcl:",remain"`
}

// A block this check does not look into (the export does not write it): its
// presence is allowed, its contents are not checked.
type block struct {
	Body hcl.Body `hcl:",remain"`
}

type jobFile struct {
	Job job `hcl:"job,block"`
}

// api/jobs.go Job (the blocks this export does not write are decoded as
// bodies, so their presence is allowed, not checked).
type job struct {
	ID               string     `hcl:"id,label"`
	Region           *string    `hcl:"region,optional"`
	Namespace        *string    `hcl:"namespace,optional"`
	IDAttr           *string    `hcl:"id,optional"`
	Name             *string    `hcl:"name,optional"`
	Type             *string    `hcl:"type,optional"`
	Priority         *int       `hcl:"priority,optional"`
	AllAtOnce        *bool      `hcl:"all_at_once,optional"`
	Datacenters      []string   `hcl:"datacenters,optional"`
	NodePool         *string    `hcl:"node_pool,optional"`
	Constraints      []block    `hcl:"constraint,block"`
	Affinities       []block    `hcl:"affinity,block"`
	TaskGroups       []group    `hcl:"group,block"`
	Update           []block    `hcl:"update,block"`
	Multiregion      []block    `hcl:"multiregion,block"`
	Spreads          []block    `hcl:"spread,block"`
	Periodic         []block    `hcl:"periodic,block"`
	ParameterizedJob []block    `hcl:"parameterized,block"`
	Reschedule       []block    `hcl:"reschedule,block"`
	Migrate          []block    `hcl:"migrate,block"`
	Meta             *stringMap `hcl:"meta,block"`
	UI               []block    `hcl:"ui,block"`
}

// api/tasks.go TaskGroup.
type group struct {
	Name                      string     `hcl:"name,label"`
	Count                     *int       `hcl:"count,optional"`
	Constraints               []block    `hcl:"constraint,block"`
	Affinities                []block    `hcl:"affinity,block"`
	Tasks                     []task     `hcl:"task,block"`
	Spreads                   []block    `hcl:"spread,block"`
	Volumes                   []block    `hcl:"volume,block"`
	RestartPolicy             *restart   `hcl:"restart,block"`
	Disconnect                []block    `hcl:"disconnect,block"`
	ReschedulePolicy          []block    `hcl:"reschedule,block"`
	EphemeralDisk             []block    `hcl:"ephemeral_disk,block"`
	Update                    []block    `hcl:"update,block"`
	Migrate                   []block    `hcl:"migrate,block"`
	Networks                  []network  `hcl:"network,block"`
	Meta                      *stringMap `hcl:"meta,block"`
	Services                  []service  `hcl:"service,block"`
	ShutdownDelay             *string    `hcl:"shutdown_delay,optional"`
	MaxRunDuration            *string    `hcl:"max_run_duration,optional"`
	StopAfterClientDisconnect *string    `hcl:"stop_after_client_disconnect,optional"`
	MaxClientDisconnect       *string    `hcl:"max_client_disconnect,optional"`
	Scaling                   []block    `hcl:"scaling,block"`
	Consul                    []block    `hcl:"consul,block"`
	PreventRescheduleOnLost   *bool      `hcl:"prevent_reschedule_on_lost,optional"`
}

// api/tasks.go RestartPolicy.
type restart struct {
	Interval        *string `hcl:"interval,optional"`
	Attempts        *int    `hcl:"attempts,optional"`
	Delay           *string `hcl:"delay,optional"`
	Mode            *string `hcl:"mode,optional"`
	RenderTemplates *bool   `hcl:"render_templates,optional"`
}

// api/tasks.go Task.
type task struct {
	Name            string     `hcl:"name,label"`
	Driver          string     `hcl:"driver,optional"`
	User            string     `hcl:"user,optional"`
	Lifecycle       []block    `hcl:"lifecycle,block"`
	Config          *block     `hcl:"config,block"`
	Constraints     []block    `hcl:"constraint,block"`
	Affinities      []block    `hcl:"affinity,block"`
	Env             *stringMap `hcl:"env,block"`
	Services        []service  `hcl:"service,block"`
	Resources       *resources `hcl:"resources,block"`
	RestartPolicy   *restart   `hcl:"restart,block"`
	Meta            *stringMap `hcl:"meta,block"`
	KillTimeout     *string    `hcl:"kill_timeout,optional"`
	LogConfig       []block    `hcl:"logs,block"`
	Artifacts       []artifact `hcl:"artifact,block"`
	Vault           []block    `hcl:"vault,block"`
	Consul          []block    `hcl:"consul,block"`
	Templates       []tmpl     `hcl:"template,block"`
	DispatchPayload []block    `hcl:"dispatch_payload,block"`
	VolumeMounts    []block    `hcl:"volume_mount,block"`
	CSIPluginConfig []block    `hcl:"csi_plugin,block"`
	Leader          bool       `hcl:"leader,optional"`
	ShutdownDelay   *string    `hcl:"shutdown_delay,optional"`
	KillSignal      string     `hcl:"kill_signal,optional"`
	Kind            string     `hcl:"kind,optional"`
	ScalingPolicies []block    `hcl:"scaling,block"`
	Secrets         []block    `hcl:"secret,block"`
	Identities      []block    `hcl:"identity,block"`
	Actions         []block    `hcl:"action,block"`
	Schedule        []block    `hcl:"schedule,block"`
}

// drivers/exec/driver.go taskConfigSpec.
type execConfig struct {
	Command string   `hcl:"command"`
	Args    []string `hcl:"args,optional"`
	PidMode string   `hcl:"pid_mode,optional"`
	IpcMode string   `hcl:"ipc_mode,optional"`
	CapAdd  []string `hcl:"cap_add,optional"`
	CapDrop []string `hcl:"cap_drop,optional"`
	WorkDir string   `hcl:"work_dir,optional"`
}

// api/tasks.go TaskArtifact.
type artifact struct {
	Source      *string    `hcl:"source,optional"`
	Options     *stringMap `hcl:"options,block"`
	Headers     *stringMap `hcl:"headers,block"`
	Mode        *string    `hcl:"mode,optional"`
	Insecure    *bool      `hcl:"insecure,optional"`
	Destination *string    `hcl:"destination,optional"`
	Chown       bool       `hcl:"chown,optional"`
}

// api/tasks.go Template.
type tmpl struct {
	Source        *string `hcl:"source,optional"`
	Destination   *string `hcl:"destination,optional"`
	Data          *string `hcl:"data,optional"`
	ChangeMode    *string `hcl:"change_mode,optional"`
	ChangeScript  []block `hcl:"change_script,block"`
	ChangeSignal  *string `hcl:"change_signal,optional"`
	Once          *bool   `hcl:"once,optional"`
	Splay         *string `hcl:"splay,optional"`
	Perms         *string `hcl:"perms,optional"`
	Uid           *int    `hcl:"uid,optional"`
	Gid           *int    `hcl:"gid,optional"`
	LeftDelim     *string `hcl:"left_delimiter,optional"`
	RightDelim    *string `hcl:"right_delimiter,optional"`
	Envvars       *bool   `hcl:"env,optional"`
	VaultGrace    *string `hcl:"vault_grace,optional"`
	Wait          []block `hcl:"wait,block"`
	ErrMissingKey *bool   `hcl:"error_on_missing_key,optional"`
}

// api/resources.go Resources.
type resources struct {
	CPU         *int      `hcl:"cpu,optional"`
	Cores       *int      `hcl:"cores,optional"`
	MemoryMB    *int      `hcl:"memory,optional"`
	MemoryMaxMB *int      `hcl:"memory_max,optional"`
	DiskMB      *int      `hcl:"disk,optional"`
	Networks    []network `hcl:"network,block"`
	Devices     []block   `hcl:"device,block"`
	NUMA        []block   `hcl:"numa,block"`
	SecretsMB   *int      `hcl:"secrets,optional"`
	IOPS        *int      `hcl:"iops,optional"`
}

// api/resources.go NetworkResource and Port.
type network struct {
	Mode          string  `hcl:"mode,optional"`
	Device        string  `hcl:"device,optional"`
	CIDR          string  `hcl:"cidr,optional"`
	IP            string  `hcl:"ip,optional"`
	DNS           []block `hcl:"dns,block"`
	ReservedPorts []port  `hcl:"reserved_ports,block"`
	DynamicPorts  []port  `hcl:"port,block"`
	Hostname      string  `hcl:"hostname,optional"`
	MBits         *int    `hcl:"mbits,optional"`
	CNI           []block `hcl:"cni,block"`
}

type port struct {
	Label           string `hcl:",label"`
	Value           int    `hcl:"static,optional"`
	To              int    `hcl:"to,optional"`
	HostNetwork     string `hcl:"host_network,optional"`
	IgnoreCollision bool   `hcl:"ignore_collision,optional"`
}

// api/services.go Service.
type service struct {
	Name              string     `hcl:"name,optional"`
	Tags              []string   `hcl:"tags,optional"`
	CanaryTags        []string   `hcl:"canary_tags,optional"`
	EnableTagOverride bool       `hcl:"enable_tag_override,optional"`
	PortLabel         string     `hcl:"port,optional"`
	AddressMode       string     `hcl:"address_mode,optional"`
	Address           string     `hcl:"address,optional"`
	Checks            []check    `hcl:"check,block"`
	CheckRestart      []block    `hcl:"check_restart,block"`
	Connect           []block    `hcl:"connect,block"`
	Meta              *stringMap `hcl:"meta,block"`
	CanaryMeta        *stringMap `hcl:"canary_meta,block"`
	TaggedAddresses   *stringMap `hcl:"tagged_addresses,block"`
	TaskName          string     `hcl:"task,optional"`
	OnUpdate          string     `hcl:"on_update,optional"`
	Identity          []block    `hcl:"identity,block"`
	Weights           []block    `hcl:"weights,block"`
	Provider          string     `hcl:"provider,optional"`
	Cluster           string     `hcl:"cluster,optional"`
	Kind              string     `hcl:"kind,optional"`
}

// api/services.go ServiceCheck.
type check struct {
	Name                   string   `hcl:"name,optional"`
	Type                   string   `hcl:"type,optional"`
	Command                string   `hcl:"command,optional"`
	Args                   []string `hcl:"args,optional"`
	Path                   string   `hcl:"path,optional"`
	Protocol               string   `hcl:"protocol,optional"`
	PortLabel              string   `hcl:"port,optional"`
	Expose                 bool     `hcl:"expose,optional"`
	AddressMode            string   `hcl:"address_mode,optional"`
	Advertise              string   `hcl:"advertise,optional"`
	Interval               string   `hcl:"interval,optional"`
	Timeout                string   `hcl:"timeout,optional"`
	InitialStatus          string   `hcl:"initial_status,optional"`
	Notes                  string   `hcl:"notes,optional"`
	TLSServerName          string   `hcl:"tls_server_name,optional"`
	TLSSkipVerify          bool     `hcl:"tls_skip_verify,optional"`
	Header                 []block  `hcl:"header,block"`
	Method                 string   `hcl:"method,optional"`
	CheckRestart           []block  `hcl:"check_restart,block"`
	GRPCService            string   `hcl:"grpc_service,optional"`
	GRPCUseTLS             bool     `hcl:"grpc_use_tls,optional"`
	TaskName               string   `hcl:"task,optional"`
	SuccessBeforePassing   int      `hcl:"success_before_passing,optional"`
	FailuresBeforeCritical int      `hcl:"failures_before_critical,optional"`
	FailuresBeforeWarning  int      `hcl:"failures_before_warning,optional"`
	Body                   string   `hcl:"body,optional"`
	OnUpdate               string   `hcl:"on_update,optional"`
}

var problems []string

func fail(format string, a ...interface{}) {
	problems = append(problems, fmt.Sprintf(format, a...))
}

func diags(d hcl.Diagnostics) {
	for _, x := range d {
		if x.Severity == hcl.DiagError {
			fail("%s", x.Error())
		}
	}
}

func strings_(m *stringMap) map[string]string {
	out := map[string]string{}
	if m == nil {
		return out
	}
	attrs, d := m.Body.JustAttributes()
	diags(d)
	for k, a := range attrs {
		v, d := a.Expr.Value(nil)
		diags(d)
		if d.HasErrors() {
			continue
		}
		if v.Type() != cty.String {
			fail("%s: %s must be a string", a.NameRange, k)
			continue
		}
		out[k] = v.AsString()
	}
	return out
}

func duration(what, s string, min time.Duration) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fail("%s: %q is not a duration: %v", what, s, err)
		return 0
	}
	if d < min {
		fail("%s: %v is under Nomad's minimum %v", what, d, min)
	}
	return d
}

type vars map[string]string

func (v *vars) String() string { return "" }
func (v *vars) Set(s string) error {
	k, val, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("-var %q is not KEY=VALUE", s)
	}
	(*v)[k] = val
	return nil
}

func main() {
	given := vars{}
	flag.Var(&given, "var", "KEY=VALUE a nomadVar item the templates read")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: jobspec_check [-var KEY=VALUE]... JOB.hcl")
		os.Exit(2)
	}
	src, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	f, d := hclparse.NewParser().ParseHCL(src, flag.Arg(0))
	diags(d)
	var jf jobFile
	if f != nil && !d.HasErrors() {
		diags(gohcl.DecodeBody(f.Body, nil, &jf))
	}
	out := map[string]interface{}{}
	if len(problems) == 0 {
		out = summarize(&jf, given)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "jobspec_check:", p)
		}
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

var sha256Re = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func summarize(jf *jobFile, given vars) map[string]interface{} {
	j := jf.Job
	out := map[string]interface{}{"id": j.ID}
	if j.Type != nil {
		switch *j.Type {
		case "service", "batch", "system", "sysbatch":
		default:
			fail("job type %q is not one of service, batch, system, sysbatch", *j.Type)
		}
		out["type"] = *j.Type
	}
	if len(j.TaskGroups) == 0 {
		fail("job %q has no group", j.ID)
	}
	var groups []interface{}
	for _, g := range j.TaskGroups {
		gs := map[string]interface{}{"name": g.Name}
		labels := map[string]int{}
		for _, n := range g.Networks {
			for _, p := range append(n.DynamicPorts, n.ReservedPorts...) {
				if _, dup := labels[p.Label]; dup {
					fail("group %q: port %q twice", g.Name, p.Label)
				}
				if p.Value < 0 || p.Value > 65535 {
					fail("group %q: port %q: static %d out of range", g.Name, p.Label, p.Value)
				}
				labels[p.Label] = p.Value
			}
		}
		gs["ports"] = labels
		if r := g.RestartPolicy; r != nil {
			rs := map[string]interface{}{}
			var interval, delay time.Duration
			attempts := 0
			if r.Interval != nil {
				interval = duration("restart.interval", *r.Interval, 5*time.Second)
				rs["interval_ms"] = interval.Milliseconds()
			}
			if r.Delay != nil {
				delay = duration("restart.delay", *r.Delay, 0)
				rs["delay_ms"] = delay.Milliseconds()
			}
			if r.Attempts != nil {
				attempts = *r.Attempts
				rs["attempts"] = attempts
			}
			mode := ""
			if r.Mode != nil {
				mode = *r.Mode
			}
			switch mode {
			case "delay", "fail":
			default:
				fail("restart: unsupported mode %q", mode)
			}
			if attempts == 0 && mode != "fail" {
				fail("restart policy %q with 0 attempts is ambiguous", mode)
			}
			if time.Duration(attempts)*delay > interval {
				fail("Nomad can't restart %d times in an interval of %v with a delay of %v", attempts, interval, delay)
			}
			rs["mode"] = mode
			gs["restart"] = rs
		}
		var tasks []interface{}
		for _, t := range g.Tasks {
			tasks = append(tasks, summarizeTask(j.ID, t, labels, given))
		}
		if len(g.Tasks) == 0 {
			fail("group %q has no task", g.Name)
		}
		for _, s := range g.Services {
			checkService(&s, labels, "")
		}
		gs["tasks"] = tasks
		groups = append(groups, gs)
	}
	out["groups"] = groups
	return out
}

func checkService(s *service, labels map[string]int, driver string) []interface{} {
	if s.PortLabel != "" {
		if _, ok := labels[s.PortLabel]; !ok {
			fail("service %q: port %q is not a port of the group's network", s.Name, s.PortLabel)
		}
	}
	provider := s.Provider
	if provider == "" {
		provider = "consul"
	}
	if provider != "consul" && provider != "nomad" {
		fail("service %q: provider %q", s.Name, provider)
	}
	var checks []interface{}
	for _, c := range s.Checks {
		switch c.Type {
		case "http", "tcp":
		case "script", "grpc":
			if provider == "nomad" {
				fail("service %q: the nomad provider runs http and tcp checks only, not %q", s.Name, c.Type)
			}
		default:
			fail("service %q: check type %q", s.Name, c.Type)
		}
		if c.Type == "http" && c.Path == "" {
			fail("service %q: an http check needs a path", s.Name)
		}
		if c.Type == "script" && c.Command == "" {
			fail("service %q: a script check needs a command", s.Name)
		}
		iv := duration("check.interval", c.Interval, time.Second)
		to := duration("check.timeout", c.Timeout, time.Second)
		port := c.PortLabel
		if port == "" {
			port = s.PortLabel
		}
		if port != "" {
			if _, ok := labels[port]; !ok {
				fail("check: port %q is not a port of the group's network", port)
			}
		}
		checks = append(checks, map[string]interface{}{
			"type": c.Type, "path": c.Path, "port": port, "command": c.Command, "args": c.Args,
			"interval_ms": iv.Milliseconds(), "timeout_ms": to.Milliseconds(), "provider": provider,
			"port_number": labels[port],
		})
	}
	return checks
}

func summarizeTask(jobID string, t task, labels map[string]int, given vars) map[string]interface{} {
	ts := map[string]interface{}{"name": t.Name, "driver": t.Driver}
	if t.Driver != "exec" {
		fail("task %q: driver %q (this check knows exec's config)", t.Name, t.Driver)
	}
	if t.Config == nil {
		fail("task %q: no config", t.Name)
	} else {
		var ec execConfig
		diags(gohcl.DecodeBody(t.Config.Body, nil, &ec))
		ts["command"] = ec.Command
		ts["args"] = ec.Args
		ts["work_dir"] = ec.WorkDir
	}
	ts["env"] = strings_(t.Env)
	var arts []interface{}
	for _, a := range t.Artifacts {
		if a.Source == nil || *a.Source == "" {
			fail("task %q: an artifact needs a source", t.Name)
			continue
		}
		opts := strings_(a.Options)
		if c, ok := opts["checksum"]; ok && !sha256Re.MatchString(c) {
			fail("task %q: artifact checksum %q is not sha256:<64 hex>", t.Name, c)
		}
		dest := ""
		if a.Destination != nil {
			dest = *a.Destination
		}
		mode := "any"
		if a.Mode != nil {
			mode = *a.Mode
			if mode != "any" && mode != "file" && mode != "dir" {
				fail("task %q: artifact mode %q", t.Name, mode)
			}
		}
		arts = append(arts, map[string]interface{}{"source": *a.Source, "options": opts, "destination": dest, "mode": mode})
	}
	ts["artifacts"] = arts
	var tmpls []interface{}
	for _, tp := range t.Templates {
		if tp.Destination == nil || *tp.Destination == "" {
			fail("task %q: a template needs a destination", t.Name)
			continue
		}
		if tp.Data == nil && tp.Source == nil {
			fail("task %q: a template needs data or a source", t.Name)
			continue
		}
		ts2 := map[string]interface{}{"destination": *tp.Destination}
		if tp.Data != nil {
			rendered, err := render(jobID, *tp.Data, given)
			if err != nil {
				fail("task %q: template %s: %v", t.Name, *tp.Destination, err)
			}
			ts2["rendered"] = rendered
		}
		if tp.ChangeMode != nil {
			switch *tp.ChangeMode {
			case "noop", "restart", "signal", "script":
			default:
				fail("template change_mode %q", *tp.ChangeMode)
			}
		}
		tmpls = append(tmpls, ts2)
	}
	ts["templates"] = tmpls
	if r := t.Resources; r != nil {
		res := map[string]interface{}{}
		if r.MemoryMB != nil {
			if *r.MemoryMB < 10 {
				fail("task %q: memory %d MB is under Nomad's minimum 10", t.Name, *r.MemoryMB)
			}
			res["memory"] = *r.MemoryMB
		}
		if r.CPU != nil {
			res["cpu"] = *r.CPU
		}
		ts["resources"] = res
	}
	var checks []interface{}
	for _, s := range t.Services {
		checks = append(checks, checkService(&s, labels, t.Driver)...)
	}
	ts["checks"] = checks
	return ts
}

// render runs a template's data as consul-template would: Go's
// text/template, with nomadVar answering the given items for the job's own
// path only.
func render(jobID, data string, given vars) (string, error) {
	funcs := template.FuncMap{
		"nomadVar": func(path string) (map[string]string, error) {
			if path != "nomad/jobs/"+jobID {
				return nil, fmt.Errorf("nomadVar %q: the job's tasks read nomad/jobs/%s", path, jobID)
			}
			return map[string]string(given), nil
		},
		"env": func(k string) string { return os.Getenv(k) },
	}
	t, err := template.New("data").Funcs(funcs).Option("missingkey=error").Parse(data)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, nil); err != nil {
		return "", err
	}
	return b.String(), nil
}
