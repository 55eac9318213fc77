package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// lastApplied is what `kubectl apply` (client-side) keeps on each object: a
// second copy of its spec the operator never reads.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// CacheTransform trims what the operator's cache keeps of every object:
// managedFields and kubectl's last-applied annotation, which together are
// often larger than a Delivery's spec and status. The operator only ever
// patches what it owns, so the trimmed fields are never written back.
func CacheTransform() toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(in any) (any, error) {
		out, err := strip(in)
		if err != nil {
			return out, err
		}
		if obj, err := meta.Accessor(out); err == nil {
			if a := obj.GetAnnotations(); a[lastApplied] != "" {
				delete(a, lastApplied)
				if len(a) == 0 {
					a = nil
				}
				obj.SetAnnotations(a)
			}
		}
		return out, nil
	}
}
