package sdlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
)

// Where cloud-init looks, inside a container.
const (
	// SeedDir is the NoCloud datasource's seed directory: meta-data and
	// user-data, read by cloud-init's first stage.
	SeedDir = "/var/lib/cloud/seed/nocloud"
	// LabCloudConfig is the lab's configuration of cloud-init, written
	// with every seed.
	LabCloudConfig = "/etc/cloud/cloud.cfg.d/99-lab.cfg"
	// CloudInitDisabled is the file that keeps cloud-init from running in
	// a container booted without a seed.
	CloudInitDisabled = "/etc/cloud/cloud-init.disabled"
	// cloudInitLog is cloud-init's log (Debian's 05_logging.cfg).
	cloudInitLog = "/var/log/cloud-init.log"
)

// labCloudCfg is what the lab's containers tell cloud-init besides the
// user-data, the part a platform's image would carry:
//   - the datasource is the NoCloud seed and nothing else: cloud-init
//     never probes a metadata service;
//   - the network is the lab's, made in the namespace before the boot:
//     cloud-init renders no network configuration;
//   - the locale stays C.UTF-8: the default (en_US.UTF-8) runs locale-gen,
//     seconds of every boot spent on what no test reads;
//   - no ssh host keys (an empty ssh_keys: none given, none generated):
//     the image has no ssh server, nor ssh-keygen (and its ssh.service is
//     masked, see seedFiles), so cloud-init's ssh modules have nothing to
//     do and nothing to warn about.
const labCloudCfg = `# The systemd lab (harness/sdlab): NoCloud seed only, the network is the lab's.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
locale: C.UTF-8
ssh_keys: {}
`

// sshUnit is masked in a container booted with a seed: the lab's image has
// no ssh server, and cloud-init's set-passwords module warns about a unit
// systemd does not know ("SSH service 'ssh' is not installed") where it
// is silent about a masked one (inactive).
const sshUnit = "/etc/systemd/system/ssh.service"

// seedFile is a file Boot writes into a container's tree before it starts.
type seedFile struct {
	path string // absolute, inside the container
	data []byte
	mode os.FileMode
	link string // when set, path is a symbolic link to it (data, mode unused)
}

// seedFiles are the files a container named name gets before its boot
// (instance is unique to this boot): with user-data, the NoCloud seed and
// the lab's cloud-init configuration; without, the file that disables
// cloud-init.
func seedFiles(instance, name string, userData []byte) ([]seedFile, error) {
	if userData == nil {
		return []seedFile{{path: CloudInitDisabled, data: []byte{}, mode: 0o644}}, nil
	}
	first, _, _ := bytes.Cut(userData, []byte{'\n'})
	if string(bytes.TrimRight(first, "\r")) != "#cloud-config" {
		return nil, fmt.Errorf("sdlab: %s: user-data: the first line is %q, want #cloud-config", name, first)
	}
	// meta-data is YAML; both values are checked names (machineName and
	// the lab prefix), nothing to quote.
	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", instance, name)
	return []seedFile{
		{path: LabCloudConfig, data: []byte(labCloudCfg), mode: 0o644},
		{path: sshUnit, link: "/dev/null"}, // systemctl mask
		// user-data may hold secrets (a VRRP password): root only, as
		// cloud-init keeps its own copies.
		{path: path.Join(SeedDir, "meta-data"), data: []byte(meta), mode: 0o600},
		{path: path.Join(SeedDir, "user-data"), data: userData, mode: 0o600},
	}, nil
}

// writeSeed writes files into the tree root (the container's, not yet
// booted). os.Root keeps every path, symlinks included, inside the tree.
func writeSeed(root string, files []seedFile) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("sdlab: seed: %w", err)
	}
	defer r.Close()
	for _, f := range files {
		rel := strings.TrimPrefix(f.path, "/")
		if err := r.MkdirAll(path.Dir(rel), 0o755); err != nil {
			return fmt.Errorf("sdlab: seed %s: %w", f.path, err)
		}
		if f.link != "" {
			if err := r.Symlink(f.link, rel); err != nil {
				return fmt.Errorf("sdlab: seed %s: %w", f.path, err)
			}
			continue
		}
		if err := r.WriteFile(rel, f.data, f.mode); err != nil {
			return fmt.Errorf("sdlab: seed %s: %w", f.path, err)
		}
		// WriteFile's mode is masked by the umask: set it as asked.
		if err := r.Chmod(rel, f.mode); err != nil {
			return fmt.Errorf("sdlab: seed %s: %w", f.path, err)
		}
	}
	return nil
}

// CloudInitReport is what cloud-init says about its run in a container.
type CloudInitReport struct {
	// Status is cloud-init's: "done", "error", "running", "disabled",
	// "not run".
	Status string `json:"status"`
	// Datasource is the datasource it found ("nocloud" for a seed).
	Datasource string `json:"datasource"`
	// BootStatusCode says why it ran ("enabled-by-generator") or not.
	BootStatusCode string `json:"boot_status_code"`
	// Errors are the errors of its stages: a module that raised.
	Errors []string `json:"errors"`
	// Long is `cloud-init status --long` as a person reads it.
	Long string `json:"-"`
	// Schema is what `cloud-init schema --system` said of the instance's
	// user-data when it refused it ("" when it is valid). cloud-init
	// itself only logs a warning for such a document and applies what it
	// understands.
	Schema string `json:"-"`
	// Warnings are the WARNING records of /var/log/cloud-init.log.
	Warnings []string `json:"-"`
}

// ErrCloudInit is returned (wrapped) by CloudInitReport.Err when cloud-init
// did not apply the user-data cleanly.
var ErrCloudInit = errors.New("sdlab: cloud-init")

// Err is nil when cloud-init is done with the seed's user-data, with no
// error, a user-data document its schema accepts, and no warning logged;
// otherwise it says everything that is wrong.
func (r *CloudInitReport) Err() error {
	var problems []string
	if r.Status != "done" {
		problems = append(problems, fmt.Sprintf("status %q, want done", r.Status))
	}
	if r.Datasource != "nocloud" {
		problems = append(problems, fmt.Sprintf("datasource %q, want nocloud (the seed)", r.Datasource))
	}
	for _, e := range r.Errors {
		problems = append(problems, "error: "+e)
	}
	if r.Schema != "" {
		problems = append(problems, "cloud-init schema --system: "+r.Schema)
	}
	for _, w := range r.Warnings {
		problems = append(problems, "logged: "+w)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrCloudInit, strings.Join(problems, "; "))
}

// CloudInit waits until cloud-init has finished in the container and
// reports how it went: `cloud-init status` (long and JSON), `cloud-init
// schema --system` and the warnings of its log.
func (c *Container) CloudInit(ctx context.Context) (*CloudInitReport, error) {
	// `status` exits 1 when its status is error (and, from cloud-init
	// 23.4 on, 2 for errors it recovered from): its output still counts.
	var ee *ExitError
	statusErr := func(err error) bool { return err != nil && (!errors.As(err, &ee) || ee.Code != 1 && ee.Code != 2) }
	long, err := c.Output(ctx, "cloud-init", "status", "--long", "--wait")
	if statusErr(err) {
		return nil, err
	}
	out, err := c.Output(ctx, "cloud-init", "status", "--format", "json")
	if statusErr(err) {
		return nil, err
	}
	r, err := parseCloudInitStatus([]byte(out))
	if err != nil {
		return nil, fmt.Errorf("sdlab: %s: %w", c.Name, err)
	}
	r.Long = strings.TrimSpace(long)
	if r.Status != "disabled" {
		// Exit 1 and the complaint on stderr when the document is invalid.
		if _, err := c.Output(ctx, "cloud-init", "schema", "--system"); err != nil {
			if !errors.As(err, &ee) {
				return nil, err
			}
			r.Schema = strings.TrimSpace(ee.Stderr)
			if r.Schema == "" {
				r.Schema = ee.Error()
			}
		}
	}
	logData, err := c.ReadFile(ctx, cloudInitLog)
	if err != nil && !errors.As(err, &ee) {
		return nil, err
	}
	r.Warnings = logWarnings(string(logData))
	return r, nil
}

// parseCloudInitStatus decodes `cloud-init status --format json`.
func parseCloudInitStatus(data []byte) (*CloudInitReport, error) {
	var r CloudInitReport
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("cloud-init status --format json: %w", err)
	}
	if r.Status == "" {
		return nil, errors.New("cloud-init status --format json: no status")
	}
	return &r, nil
}

// logWarnings are the WARNING (and worse) records of cloud-init's log,
// whose lines read "DATE TIME - FILE[LEVEL]: MESSAGE".
func logWarnings(log string) []string {
	var out []string
	for line := range strings.SplitSeq(log, "\n") {
		for _, lvl := range []string{"[WARNING]: ", "[ERROR]: ", "[CRITICAL]: "} {
			if _, msg, ok := strings.Cut(line, lvl); ok {
				out = append(out, strings.Trim(lvl, "[]: ")+": "+msg)
				break
			}
		}
	}
	return out
}
