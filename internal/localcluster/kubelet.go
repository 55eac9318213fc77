package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// Source reads what a pod's volumes and environment refer to.
type Source interface {
	// Secret returns the data of a Secret of the pod's namespace.
	Secret(ctx context.Context, namespace, name string) (map[string][]byte, error)
	// ConfigMap returns the data of a ConfigMap of the pod's namespace.
	ConfigMap(ctx context.Context, namespace, name string) (map[string]string, error)
	// Token returns a ServiceAccount token bound to the pod.
	Token(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (string, error)
}

// Container is one container of a pod laid out on this machine the way the
// kubelet lays it out: each volume a folder, each key of a Secret or
// ConfigMap a file with the owner, group and mode the kubelet gives it, and
// the environment with its references filled in. Paths under the container's
// mounts in its arguments and environment are rewritten to the folders.
type Container struct {
	// Args are the container's command and arguments.
	Args []string
	// Env is the container's environment as KEY=value.
	Env []string
	// Mounts maps each mount path of the container to its folder here.
	Mounts map[string]string
	// Cred is the user, group and supplementary groups the container runs as.
	Cred *syscall.Credential
}

// Local returns path with a mount path prefix replaced by its folder.
func (c *Container) Local(path string) string {
	best := ""
	for mp := range c.Mounts {
		if (path == mp || strings.HasPrefix(path, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return path
	}
	return c.Mounts[best] + strings.TrimPrefix(path, best)
}

// FileMode is the mode and group the kubelet gives a file of a Secret,
// ConfigMap or projected volume: the key's mode, else the volume's default
// mode, else 0644, owned by root; with an fsGroup the group becomes it and
// gets read access (SetVolumeOwnership adds 0440 to read-only volumes).
func FileMode(item, def *int32, fsGroup *int64) (os.FileMode, int) {
	mode := os.FileMode(0o644)
	switch {
	case item != nil:
		mode = os.FileMode(*item)
	case def != nil:
		mode = os.FileMode(*def)
	}
	if fsGroup == nil {
		return mode, 0
	}
	return mode | 0o440, int(*fsGroup)
}

// DefaultUID is the user of the DelAuto image (its Dockerfile's USER), used
// when the pod names none.
const DefaultUID = 65532

// LayOut materializes container name of pod under dir. Files are owned by
// root as the kubelet writes them, so a container that could not read its
// files in a cluster cannot read them here either: run it as Cred.
func LayOut(ctx context.Context, src Source, pod *corev1.Pod, container string, dir string) (*Container, error) {
	spec := pod.Spec
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container || container == "" {
			c = &spec.Containers[i]
			break
		}
	}
	if c == nil {
		return nil, fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, container)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	var fsGroup *int64
	if sc := spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	folders := map[string]string{}
	for _, v := range spec.Volumes {
		vd := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(vd, 0o755); err != nil {
			return nil, err
		}
		if err := layOutVolume(ctx, src, pod, v, vd, fsGroup); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		folders[v.Name] = vd
	}
	out := &Container{Mounts: map[string]string{}, Cred: credential(pod, c)}
	for _, m := range c.VolumeMounts {
		f, ok := folders[m.Name]
		if !ok {
			return nil, fmt.Errorf("mount %s: no volume %s", m.MountPath, m.Name)
		}
		if m.SubPath != "" {
			f = filepath.Join(f, m.SubPath)
		}
		out.Mounts[m.MountPath] = f
	}
	var fromSources []string
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			data, err := src.Secret(ctx, pod.Namespace, ef.SecretRef.Name)
			if err != nil {
				if isOptional(ef.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom Secret %s: %w", ef.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				fromSources = append(fromSources, ef.Prefix+k+"="+string(data[k]))
			}
		case ef.ConfigMapRef != nil:
			data, err := src.ConfigMap(ctx, pod.Namespace, ef.ConfigMapRef.Name)
			if err != nil {
				if isOptional(ef.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom ConfigMap %s: %w", ef.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				fromSources = append(fromSources, ef.Prefix+k+"="+data[k])
			}
		}
	}
	vars := map[string]string{}
	for _, e := range c.Env {
		v, err := envValue(ctx, src, pod, e)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		v = expand(v, vars)
		vars[e.Name] = v
		out.Env = append(out.Env, e.Name+"="+out.Local(v))
	}
	// The kubelet puts envFrom first; env entries of the same name win.
	out.Env = append(fromSources, out.Env...)
	for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
		a = expand(a, vars)
		if i := strings.IndexByte(a, '='); i > 0 && strings.HasPrefix(a, "--") {
			a = a[:i+1] + out.Local(a[i+1:])
		} else {
			a = out.Local(a)
		}
		out.Args = append(out.Args, a)
	}
	return out, nil
}

func layOutVolume(ctx context.Context, src Source, pod *corev1.Pod, v corev1.Volume, vd string, fsGroup *int64) error {
	switch {
	case v.Secret != nil:
		data, err := src.Secret(ctx, pod.Namespace, v.Secret.SecretName)
		if err != nil {
			if isOptional(v.Secret.Optional) {
				return nil
			}
			return err
		}
		return writeKeys(vd, bytesToStrings(data), v.Secret.Items, v.Secret.DefaultMode, fsGroup)
	case v.ConfigMap != nil:
		data, err := src.ConfigMap(ctx, pod.Namespace, v.ConfigMap.Name)
		if err != nil {
			if isOptional(v.ConfigMap.Optional) {
				return nil
			}
			return err
		}
		return writeKeys(vd, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode, fsGroup)
	case v.EmptyDir != nil:
		return os.Chmod(vd, 0o777)
	case v.DownwardAPI != nil:
		return writeDownwardAPI(vd, pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode, fsGroup)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if err := layOutProjection(ctx, src, pod, s, vd, v.Projected.DefaultMode, fsGroup); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("a kind of volume the local cluster does not lay out")
}

func layOutProjection(ctx context.Context, src Source, pod *corev1.Pod, s corev1.VolumeProjection, vd string, def *int32, fsGroup *int64) error {
	switch {
	case s.ServiceAccountToken != nil:
		exp := int64(3600)
		if s.ServiceAccountToken.ExpirationSeconds != nil {
			exp = *s.ServiceAccountToken.ExpirationSeconds
		}
		tok, err := src.Token(ctx, pod, s.ServiceAccountToken.Audience, exp)
		if err != nil {
			return fmt.Errorf("ServiceAccount token: %w", err)
		}
		p := s.ServiceAccountToken.Path
		return writeKeys(vd, map[string]string{p: tok}, []corev1.KeyToPath{{Key: p, Path: p}}, def, fsGroup)
	case s.ConfigMap != nil:
		data, err := src.ConfigMap(ctx, pod.Namespace, s.ConfigMap.Name)
		if err != nil {
			if isOptional(s.ConfigMap.Optional) {
				return nil
			}
			return err
		}
		return writeKeys(vd, data, s.ConfigMap.Items, def, fsGroup)
	case s.Secret != nil:
		data, err := src.Secret(ctx, pod.Namespace, s.Secret.Name)
		if err != nil {
			if isOptional(s.Secret.Optional) {
				return nil
			}
			return err
		}
		return writeKeys(vd, bytesToStrings(data), s.Secret.Items, def, fsGroup)
	case s.DownwardAPI != nil:
		return writeDownwardAPI(vd, pod, s.DownwardAPI.Items, def, fsGroup)
	}
	return fmt.Errorf("a kind of projection the local cluster does not lay out")
}

// writeDownwardAPI writes the pod's fields the items name.
func writeDownwardAPI(vd string, pod *corev1.Pod, files []corev1.DownwardAPIVolumeFile, def *int32, fsGroup *int64) error {
	data := map[string]string{}
	var items []corev1.KeyToPath
	for _, it := range files {
		if it.FieldRef == nil {
			return fmt.Errorf("downward API item %s: only field references are laid out", it.Path)
		}
		val, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		data[it.Path] = val
		items = append(items, corev1.KeyToPath{Key: it.Path, Path: it.Path, Mode: it.Mode})
	}
	return writeKeys(vd, data, items, def, fsGroup)
}

// writeKeys writes the selected keys of data (all without items) into vd as
// root-owned files with the kubelet's modes.
func writeKeys(vd string, data map[string]string, items []corev1.KeyToPath, def *int32, fsGroup *int64) error {
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("no key %s", it.Key)
		}
		p := filepath.Join(vd, it.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode, gid := FileMode(it.Mode, def, fsGroup)
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(val), 0o600); err != nil {
			return err
		}
		if err := os.Chown(tmp, 0, gid); err != nil && !os.IsPermission(err) {
			return err
		}
		if err := os.Chmod(tmp, mode); err != nil {
			return err
		}
		// Replaced at once, like the kubelet's atomic writer: a reader sees
		// the old file or the new one.
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}

func envValue(ctx context.Context, src Source, pod *corev1.Pod, e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch vf := e.ValueFrom; {
	case vf.FieldRef != nil:
		return fieldValue(pod, vf.FieldRef.FieldPath)
	case vf.SecretKeyRef != nil:
		data, err := src.Secret(ctx, pod.Namespace, vf.SecretKeyRef.Name)
		if err != nil {
			if isOptional(vf.SecretKeyRef.Optional) {
				return "", nil
			}
			return "", err
		}
		v, ok := data[vf.SecretKeyRef.Key]
		if !ok && !isOptional(vf.SecretKeyRef.Optional) {
			return "", fmt.Errorf("Secret %s has no key %s", vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
		}
		return string(v), nil
	case vf.ConfigMapKeyRef != nil:
		data, err := src.ConfigMap(ctx, pod.Namespace, vf.ConfigMapKeyRef.Name)
		if err != nil {
			if isOptional(vf.ConfigMapKeyRef.Optional) {
				return "", nil
			}
			return "", err
		}
		v, ok := data[vf.ConfigMapKeyRef.Key]
		if !ok && !isOptional(vf.ConfigMapKeyRef.Optional) {
			return "", fmt.Errorf("ConfigMap %s has no key %s", vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
		}
		return v, nil
	}
	return "", fmt.Errorf("a source the local cluster does not fill in")
}

// fieldValue is the downward API's value of path for pod.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	return "", fmt.Errorf("field %s is not laid out by the local cluster", path)
}

// credential is the user and groups a container runs as.
func credential(pod *corev1.Pod, c *corev1.Container) *syscall.Credential {
	cred := &syscall.Credential{Uid: DefaultUID, Gid: DefaultUID}
	if sc := pod.Spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			cred.Uid = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			cred.Gid = uint32(*sc.RunAsGroup)
		}
		if sc.FSGroup != nil {
			cred.Groups = append(cred.Groups, uint32(*sc.FSGroup))
		}
		for _, g := range sc.SupplementalGroups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			cred.Uid = uint32(*cs.RunAsUser)
		}
		if cs.RunAsGroup != nil {
			cred.Gid = uint32(*cs.RunAsGroup)
		}
	}
	return cred
}

// expand replaces $(VAR) references to earlier variables, as the kubelet does.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$(") {
		return s
	}
	for k, v := range vars {
		s = strings.ReplaceAll(s, "$("+k+")", v)
	}
	return s
}

func isOptional(b *bool) bool { return b != nil && *b }

func bytesToStrings(in map[string][]byte) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = string(v)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Objects is a Source of fixed Secrets and ConfigMaps by name, for tests
// that lay out a pod without a cluster. It hands out no tokens.
type Objects struct {
	Secrets    map[string]map[string]string
	ConfigMaps map[string]map[string]string
}

// Secret returns the named Secret's data.
func (o Objects) Secret(_ context.Context, _, name string) (map[string][]byte, error) {
	d, ok := o.Secrets[name]
	if !ok {
		return nil, fmt.Errorf("no Secret %s", name)
	}
	out := make(map[string][]byte, len(d))
	for k, v := range d {
		out[k] = []byte(v)
	}
	return out, nil
}

// ConfigMap returns the named ConfigMap's data.
func (o Objects) ConfigMap(_ context.Context, _, name string) (map[string]string, error) {
	d, ok := o.ConfigMaps[name]
	if !ok {
		return nil, fmt.Errorf("no ConfigMap %s", name)
	}
	return d, nil
}

// Token fails: Objects has no ServiceAccounts.
func (o Objects) Token(context.Context, *corev1.Pod, string, int64) (string, error) {
	return "", fmt.Errorf("no ServiceAccount tokens outside a cluster")
}
