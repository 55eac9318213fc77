package controllers

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// runPhases runs a reconcile's phases in order on its scope s, until one
// fails or, after one, done(s) says the reconcile is over (nil: never).
func runPhases[S any](ctx context.Context, s S, done func(S) bool, phases ...func(context.Context, S) error) error {
	for _, phase := range phases {
		if err := phase(ctx, s); err != nil {
			return err
		}
		if done != nil && done(s) {
			return nil
		}
	}
	return nil
}

// patchStatus writes obj's status, computed during one reconcile, with a
// merge patch against base (obj as it was read), and only when the status
// changed: no write, no event, no hot loop. A deleted object is not an
// error. opts name the writer (its field manager).
func patchStatus(ctx context.Context, c client.Client, obj, base client.Object, before, after any, opts ...client.SubResourcePatchOption) error {
	if equality.Semantic.DeepEqual(before, after) {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(base), opts...); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// joinErr adds a status write's error to the reconcile's.
func joinErr(err, statusErr error) error { return errors.Join(err, statusErr) }
