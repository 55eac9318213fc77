/*
Copyright 2026 The DelAuto Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Weekday is a day of the week.
// +kubebuilder:validation:Enum=Monday;Tuesday;Wednesday;Thursday;Friday;Saturday;Sunday
type Weekday string

// CallingHours is the part of the day, in the recipient's time zone, when
// calls may be placed.
// +kubebuilder:validation:XValidation:rule="!has(self.start) || !has(self.end) || self.start < self.end",message="callingHours.start must be before callingHours.end (calls cannot span midnight)"
type CallingHours struct {
	// start is the earliest local time a call may be placed (HH:MM).
	// +optional
	// +kubebuilder:default="09:00"
	Start ClockTime `json:"start,omitempty"`
	// end is the local time after which no call is placed (HH:MM).
	// +optional
	// +kubebuilder:default="20:00"
	End ClockTime `json:"end,omitempty"`
	// days on which calls may be placed. Empty: every day.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	Days []Weekday `json:"days,omitempty"`
}

// ScheduleSpec says when calls are placed.
type ScheduleSpec struct {
	// leadTime is how long before the delivery window opens the first call is placed.
	// +optional
	// +kubebuilder:default="2h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('168h')",message="leadTime must be a duration between 0s and 168h, such as 90m or 2h"
	LeadTime *metav1.Duration `json:"leadTime,omitempty"`
	// callingHours is when calls may be placed, in the recipient's time zone.
	// +optional
	// +kubebuilder:default={}
	CallingHours CallingHours `json:"callingHours,omitempty"`
	// defaultTimeZone applies to recipients that give none.
	// +optional
	// +kubebuilder:default=UTC
	DefaultTimeZone TimeZone `json:"defaultTimeZone,omitempty"`
}

// RetryPolicy says when an unanswered call is tried again.
// +kubebuilder:validation:XValidation:rule="!has(self.maxAttempts) || self.maxAttempts == 1 || (has(self.backoff) && size(self.backoff) >= 1)",message="retry.backoff needs at least one step when maxAttempts is above 1"
type RetryPolicy struct {
	// maxAttempts is the most calls placed for one delivery, the first included.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	MaxAttempts int32 `json:"maxAttempts,omitempty"`
	// backoff is the wait before each retry: the first step before attempt 2,
	// and so on; the last step repeats.
	// +optional
	// +kubebuilder:default={"15m","1h"}
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:XValidation:rule="self.all(d, duration(d) >= duration('1m') && duration(d) <= duration('48h'))",message="each backoff step must be a duration between 1m and 48h, such as 15m or 1h"
	Backoff []metav1.Duration `json:"backoff,omitempty"`
	// retryOn lists the call results that lead to another attempt. An
	// answered call (completed) is never retried, even when the recipient
	// hung up or chose nothing: the Delivery ends Unreachable.
	// +optional
	// +kubebuilder:default={"no-answer","busy","failed"}
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(r, r in ['no-answer', 'busy', 'failed', 'machine', 'canceled'])",message="retryOn may only hold no-answer, busy, failed, machine and canceled"
	RetryOn []CallResult `json:"retryOn,omitempty"`
}

// AnsweringMachineAction is what a call does when a machine answers.
// +kubebuilder:validation:Enum=HangUp;Voicemail
type AnsweringMachineAction string

// The answering-machine actions.
const (
	// MachineHangUp hangs up; the attempt counts as "machine" and may be retried.
	MachineHangUp AnsweringMachineAction = "HangUp"
	// MachineVoicemail leaves a short voicemail with the callback number.
	MachineVoicemail AnsweringMachineAction = "Voicemail"
)

// MenuPrompts overrides the wording of the call. Each field is spoken as is.
type MenuPrompts struct {
	// menu lists the options after the greeting.
	// +optional
	// +kubebuilder:validation:MaxLength=1000
	Menu string `json:"menu,omitempty"`
	// confirmed is said after the recipient confirmed.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Confirmed string `json:"confirmed,omitempty"`
	// reschedule is said after the recipient asked for another time.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Reschedule string `json:"reschedule,omitempty"`
	// instructions asks the recipient to speak their instructions after the tone.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Instructions string `json:"instructions,omitempty"`
	// optedOut is said after the recipient asked not to be called again.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	OptedOut string `json:"optedOut,omitempty"`
	// goodbye ends a call that got no answer.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Goodbye string `json:"goodbye,omitempty"`
	// voicemail is left on an answering machine when answeringMachine is Voicemail.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Voicemail string `json:"voicemail,omitempty"`
	// noInput opens the repeat of the menu when nothing was heard.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	NoInput string `json:"noInput,omitempty"`
	// invalid opens the repeat of the menu after an answer that is not an option.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	Invalid string `json:"invalid,omitempty"`
	// instructionsSaved ends the call after the instructions were recorded.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	InstructionsSaved string `json:"instructionsSaved,omitempty"`
	// noInstructions ends the call when no instructions were recorded.
	// +optional
	// +kubebuilder:validation:MaxLength=500
	NoInstructions string `json:"noInstructions,omitempty"`
}

// MenuWords are words and phrases that choose each menu option when spoken.
// They are matched without case, accents or punctuation, also inside a
// sentence; the keys (1 confirm, 2 reschedule, 3 instructions, 9 stop,
// 0 repeat) and their digits always work.
type MenuWords struct {
	// confirm confirms the delivery, for example "yes".
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=60
	Confirm []string `json:"confirm,omitempty"`
	// reschedule asks for another delivery time.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=60
	Reschedule []string `json:"reschedule,omitempty"`
	// instructions leaves instructions for the driver.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=60
	Instructions []string `json:"instructions,omitempty"`
	// stop asks not to be called again.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=60
	Stop []string `json:"stop,omitempty"`
	// repeat plays the menu again.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=60
	Repeat []string `json:"repeat,omitempty"`
}

// AgentSMS overrides the agent's SMS. Each message may use {company},
// {name}, {address}, {when}, {body} (the transcription or the recording's
// link), {choice} and {ref}.
type AgentSMS struct {
	// reschedule tells the agent the recipient wants another time.
	// +optional
	// +kubebuilder:validation:MaxLength=300
	Reschedule string `json:"reschedule,omitempty"`
	// instructions carries the transcribed instructions ({body}).
	// +optional
	// +kubebuilder:validation:MaxLength=300
	Instructions string `json:"instructions,omitempty"`
	// instructionsVoice carries the link to recorded instructions that were not transcribed ({body}).
	// +optional
	// +kubebuilder:validation:MaxLength=300
	InstructionsVoice string `json:"instructionsVoice,omitempty"`
	// instructionsNone says the recipient chose instructions but recorded none.
	// +optional
	// +kubebuilder:validation:MaxLength=300
	InstructionsNone string `json:"instructionsNone,omitempty"`
}

// ScriptLanguage is the campaign's wording for one language. For a
// language with built-in wording (de, en, es, fr, it, nl, pl) every field is
// optional and overrides or (words) adds to the built-in wording; any other
// language needs it all: sayLanguage, speechLanguage, greeting, every
// prompt and words for every option.
// +kubebuilder:validation:XValidation:rule="self.code.matches('^(de|en|es|fr|it|nl|pl)(-|$)') || (has(self.sayLanguage) && has(self.speechLanguage))",messageExpression="'language ' + self.code + ' has no built-in wording (built in: de, en, es, fr, it, nl, pl), so it needs sayLanguage and speechLanguage'"
// +kubebuilder:validation:XValidation:rule="self.code.matches('^(de|en|es|fr|it|nl|pl)(-|$)') || has(self.greeting)",messageExpression="'language ' + self.code + ' has no built-in wording (built in: de, en, es, fr, it, nl, pl), so it needs a greeting'"
// +kubebuilder:validation:XValidation:rule="self.code.matches('^(de|en|es|fr|it|nl|pl)(-|$)') || (has(self.prompts) && has(self.prompts.menu) && has(self.prompts.noInput) && has(self.prompts.invalid) && has(self.prompts.confirmed) && has(self.prompts.reschedule) && has(self.prompts.optedOut) && has(self.prompts.instructions) && has(self.prompts.instructionsSaved) && has(self.prompts.noInstructions) && has(self.prompts.goodbye) && has(self.prompts.voicemail))",messageExpression="'language ' + self.code + ' has no built-in wording (built in: de, en, es, fr, it, nl, pl), so it needs every prompt: menu, noInput, invalid, confirmed, reschedule, optedOut, instructions, instructionsSaved, noInstructions, goodbye and voicemail'"
// +kubebuilder:validation:XValidation:rule="self.code.matches('^(de|en|es|fr|it|nl|pl)(-|$)') || (has(self.words) && has(self.words.confirm) && has(self.words.reschedule) && has(self.words.instructions) && has(self.words.stop) && has(self.words.repeat))",messageExpression="'language ' + self.code + ' has no built-in wording (built in: de, en, es, fr, it, nl, pl), so it needs words for every option: confirm, reschedule, instructions, stop and repeat'"
type ScriptLanguage struct {
	// code is the BCP 47 tag of the recipients this wording is for, for
	// example de or de-AT. A recipient's language matches its exact tag
	// first, then its base language.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=35
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$')",message="code must be a BCP 47 tag such as de, pt or de-AT"
	Code string `json:"code"`
	// sayLanguage is the language Twilio's <Say> speaks, for example de-DE.
	// +optional
	// +kubebuilder:validation:MaxLength=35
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{2,8})+$')",message="sayLanguage must be a Twilio language code with a region, such as de-DE or pt-BR"
	SayLanguage string `json:"sayLanguage,omitempty"`
	// speechLanguage is the speech recognition language of the menu's
	// <Gather>, for example de-DE.
	// +optional
	// +kubebuilder:validation:MaxLength=35
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{2,8})+$')",message="speechLanguage must be a Twilio language code with a region, such as de-DE or pt-BR"
	SpeechLanguage string `json:"speechLanguage,omitempty"`
	// greeting is this language's greeting, a template like script.greeting.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1000
	// +kubebuilder:validation:XValidation:rule="!self.matches('[{][{]-?[[:space:]]*[^./[:space:]-]') && !self.matches('[{][{]-?[[:space:]]*[.][^}]*[|(]')",message="greeting may only hold text and field references such as {{.Name}}, {{.Company}}, {{.Date}}, {{.WindowStart}} and {{.WindowEnd}}; range, with, if, template, define, block, functions and pipelines are not allowed"
	Greeting string `json:"greeting,omitempty"`
	// prompts overrides this language's prompts.
	// +optional
	Prompts *MenuPrompts `json:"prompts,omitempty"`
	// words are added to the words that choose each option in this language.
	// +optional
	Words *MenuWords `json:"words,omitempty"`
	// hints replace the speech hints of the menu in this language.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=100
	Hints []string `json:"hints,omitempty"`
	// sms overrides the agent's SMS when this is the campaign's default language.
	// +optional
	SMS *AgentSMS `json:"sms,omitempty"`
}

// CallScript is what the call says and how long it may last.
// +kubebuilder:validation:XValidation:rule="!has(self.defaultLanguage) || self.defaultLanguage.matches('^(de|en|es|fr|it|nl|pl)(-|$)') || (has(self.languages) && self.languages.exists(l, l.code == self.defaultLanguage))",messageExpression="'defaultLanguage ' + self.defaultLanguage + ' has no wording: use a built-in language (de, en, es, fr, it, nl, pl) or add an entry with code ' + self.defaultLanguage + ' to languages'"
type CallScript struct {
	// companyName is the sender named in the greeting.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	CompanyName string `json:"companyName"`
	// greeting is the greeting in the campaign's default language: text with
	// field references {{.Name}}, {{.Company}}, {{.WindowStart}},
	// {{.WindowEnd}} and {{.Date}}, rendered in the recipient's time zone.
	// Other template actions (range, with, if, template, define, block,
	// functions, pipelines) are refused. Empty: the language's built-in
	// greeting; other languages' greetings are in languages.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1000
	// +kubebuilder:validation:XValidation:rule="!self.matches('[{][{]-?[[:space:]]*[^./[:space:]-]') && !self.matches('[{][{]-?[[:space:]]*[.][^}]*[|(]')",message="greeting may only hold text and field references such as {{.Name}}, {{.Company}}, {{.Date}}, {{.WindowStart}} and {{.WindowEnd}}; range, with, if, template, define, block, functions and pipelines are not allowed"
	Greeting string `json:"greeting,omitempty"`
	// prompts overrides the wording of the campaign's default language;
	// other languages' prompts are in languages.
	// +optional
	Prompts *MenuPrompts `json:"prompts,omitempty"`
	// defaultLanguage is the BCP 47 tag of the language a call is held in
	// when the recipient has none, or has one with neither built-in wording
	// nor an entry in languages (the Delivery then says so with the reason
	// LanguageFallback). The agent's SMS is in it too. Built-in wording:
	// de, en, es, fr, it, nl and pl.
	// +optional
	// +kubebuilder:default=en
	// +kubebuilder:validation:MaxLength=35
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$')",message="defaultLanguage must be a BCP 47 tag such as en, de or en-GB"
	DefaultLanguage string `json:"defaultLanguage,omitempty"`
	// languages overrides the wording per language, or adds languages
	// without built-in wording. See docs/languages.md.
	// +optional
	// +listType=map
	// +listMapKey=code
	// +kubebuilder:validation:MaxItems=20
	Languages []ScriptLanguage `json:"languages,omitempty"`
	// instructionsMaxLength bounds the recorded instructions.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('120s')",message="instructionsMaxLength must be between 5s and 120s"
	InstructionsMaxLength *metav1.Duration `json:"instructionsMaxLength,omitempty"`
	// answeringMachine is what happens when a machine answers.
	// +optional
	// +kubebuilder:default=HangUp
	AnsweringMachine AnsweringMachineAction `json:"answeringMachine,omitempty"`
	// callbackNumber is the number a voicemail asks the recipient to call back.
	// +optional
	CallbackNumber PhoneNumber `json:"callbackNumber,omitempty"`
	// timeLimit bounds the whole call. The delivery-notification exemption
	// requires short calls: 60s by default, at most 5m.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('15s') && duration(self) <= duration('5m')",message="timeLimit must be between 15s and 5m"
	TimeLimit *metav1.Duration `json:"timeLimit,omitempty"`
	// ringTimeout is how long a call rings before it counts as no-answer.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('60s')",message="ringTimeout must be between 5s and 60s"
	RingTimeout *metav1.Duration `json:"ringTimeout,omitempty"`
}

// TwilioCredentials names the Secret with the Twilio account SID and auth token.
type TwilioCredentials struct {
	// name of the Secret holding the Twilio account SID and auth token.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// accountSIDKey is the Secret key holding the account SID.
	// +optional
	// +kubebuilder:default=accountSID
	// +kubebuilder:validation:MaxLength=253
	AccountSIDKey string `json:"accountSIDKey,omitempty"`
	// authTokenKey is the Secret key holding the auth token (also the webhook signing key).
	// +optional
	// +kubebuilder:default=authToken
	// +kubebuilder:validation:MaxLength=253
	AuthTokenKey string `json:"authTokenKey,omitempty"`
}

// TwilioSpec is the Twilio account the campaign calls from.
type TwilioSpec struct {
	// credentialsSecretRef is the Secret with the account SID and auth token.
	// +required
	CredentialsSecretRef TwilioCredentials `json:"credentialsSecretRef"`
	// fromNumbers are the caller IDs; a recipient keeps the same one across attempts.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=50
	FromNumbers []PhoneNumber `json:"fromNumbers"`
	// callsPerSecond is the account's call-creation limit, shared by all shards.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	CallsPerSecond int32 `json:"callsPerSecond,omitempty"`
	// callbackURL is the public HTTPS base URL Twilio reaches the callback server at.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",message="callbackURL must be an absolute https:// URL that Twilio can reach, such as https://calls.example.com"
	CallbackURL string `json:"callbackURL"`
}

// ShardingMode is how deliveries are split into shards.
// +kubebuilder:validation:Enum=Hash;Region
type ShardingMode string

// The sharding modes.
const (
	// ShardByHash spreads deliveries over count shards by a hash of their UID.
	ShardByHash ShardingMode = "Hash"
	// ShardByRegion gives each region its own shard.
	ShardByRegion ShardingMode = "Region"
)

// ShardingSpec splits a campaign's calls into shards, each with its own queue
// and worker Deployment.
// +kubebuilder:validation:XValidation:rule="!has(self.by) || self.by != 'Region' || (has(self.regions) && size(self.regions) > 0)",message="sharding.regions must list at least one region when sharding by Region"
// +kubebuilder:validation:XValidation:rule="!has(self.by) || self.by != 'Hash' || !has(self.regions) || size(self.regions) == 0",message="sharding.regions is only used when sharding by Region"
type ShardingSpec struct {
	// by is the sharding mode.
	// +optional
	// +kubebuilder:default=Hash
	By ShardingMode `json:"by,omitempty"`
	// count is the number of shards when sharding by Hash.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Count int32 `json:"count,omitempty"`
	// regions are the shards when sharding by Region; deliveries of other
	// regions go to the first one.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.all(r, r.matches('^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'))",message="each region must be lower-case letters, digits and '-', at most 40 characters"
	Regions []string `json:"regions,omitempty"`
}

// WorkersSpec is how each shard's worker Deployment runs and scales.
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="workers.minReplicas must not exceed workers.maxReplicas"
type WorkersSpec struct {
	// image of the worker. Empty: the operator's default image.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`
	// resources of each worker container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// concurrency is how many calls one worker pod handles at once.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Concurrency int32 `json:"concurrency,omitempty"`
	// minReplicas is the fewest worker pods per shard (0 scales an idle shard to zero).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// maxReplicas is the most worker pods per shard.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxReplicas int32 `json:"maxReplicas,omitempty"`
	// scaleDownDelay is how long load must stay low before pods are removed.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="scaleDownDelay must be between 0s and 24h"
	ScaleDownDelay *metav1.Duration `json:"scaleDownDelay,omitempty"`
	// scaleDownStep is the most worker pods a shard loses in one step down;
	// steps are scaleDownDelay/4 apart (at least 15s), each after a drain.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	ScaleDownStep int32 `json:"scaleDownStep,omitempty"`
	// lookAhead is how far ahead planned calls count as load: a pod's start
	// time plus a margin, so the fleet is up when calls fall due.
	// +optional
	// +kubebuilder:default="90s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="lookAhead must be between 0s and 1h"
	LookAhead *metav1.Duration `json:"lookAhead,omitempty"`
	// averageCallDuration is the call length assumed while fewer than 5 of
	// the campaign's calls were answered and ended in the last 10 minutes;
	// from then on their measured average is used. With the account's
	// callsPerSecond it bounds how many calls can usefully run at once.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4h')",message="averageCallDuration must be between 1s and 4h"
	AverageCallDuration *metav1.Duration `json:"averageCallDuration,omitempty"`
	// autoscaling is who sets the worker Deployments' replicas: Operator
	// (from the queues, the rate limit and min/max) or External (an HPA or
	// KEDA; the operator stops applying replicas and exports the per-shard
	// figures as Prometheus gauges).
	// +optional
	// +kubebuilder:default=Operator
	Autoscaling AutoscalingMode `json:"autoscaling,omitempty"`
}

// AutoscalingMode is who scales a campaign's worker Deployments.
// +kubebuilder:validation:Enum=Operator;External
type AutoscalingMode string

// The autoscaling modes.
const (
	// AutoscaleByOperator: the operator decides each shard's replicas.
	AutoscaleByOperator AutoscalingMode = "Operator"
	// AutoscaleExternal: an HPA or KEDA sets replicas; the operator leaves them.
	AutoscaleExternal AutoscalingMode = "External"
)

// RelayWebhook posts the recipient's answer to the user's dispatch system.
type RelayWebhook struct {
	// url receives a JSON POST per answer that needs the agent: https only;
	// redirects are not followed and private, loopback and link-local
	// addresses are refused unless the worker runs with --relay-allow-private.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",message="relay webhook url must be an absolute https:// URL, such as https://dispatch.example.com/hook"
	URL string `json:"url"`
	// secretRef names the Secret whose key signs each request (HMAC-SHA256).
	// +required
	SecretRef SecretKeySelector `json:"secretRef"`
}

// SecretKeySelector names a key of a Secret in the campaign's namespace.
type SecretKeySelector struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// key in the Secret.
	// +optional
	// +kubebuilder:default=secret
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// RelaySpec says how the agent is told.
type RelaySpec struct {
	// sms texts the agent's phone from the campaign's number.
	// +optional
	// +kubebuilder:default=true
	SMS *bool `json:"sms,omitempty"`
	// webhook also posts each answer to the user's dispatch system.
	// +optional
	Webhook *RelayWebhook `json:"webhook,omitempty"`
}

// RecordingDeletion is when recordings are deleted at Twilio.
// +kubebuilder:validation:Enum=WithCallLog;AfterRelay
type RecordingDeletion string

// The recording deletion policies.
const (
	// RecordingsWithCallLog deletes recordings when their call expires from the call log.
	RecordingsWithCallLog RecordingDeletion = "WithCallLog"
	// RecordingsAfterRelay deletes recordings as soon as the agent was told.
	RecordingsAfterRelay RecordingDeletion = "AfterRelay"
)

// CallCampaignSpec says how, when and from which number deliveries are called,
// and how the worker fleet scales.
// +kubebuilder:validation:XValidation:rule="!has(self.recordingDeletion) || self.recordingDeletion != 'AfterRelay' || !has(self.relay) || !has(self.relay.sms) || self.relay.sms || has(self.relay.webhook)",message="recordingDeletion AfterRelay deletes recordings once the agent was told, but no relay tells the agent: keep relay.sms on or set relay.webhook"
type CallCampaignSpec struct {
	// deliverySelector picks the Deliveries this campaign calls when they name
	// no campaign. Empty: only Deliveries that name it in campaignRef.
	// +optional
	DeliverySelector *metav1.LabelSelector `json:"deliverySelector,omitempty"`
	// schedule is when calls are placed.
	// +optional
	// +kubebuilder:default={}
	Schedule ScheduleSpec `json:"schedule,omitempty"`
	// retry is when unanswered calls are tried again.
	// +optional
	// +kubebuilder:default={}
	Retry RetryPolicy `json:"retry,omitempty"`
	// script is what the call says.
	// +required
	Script CallScript `json:"script"`
	// twilio is the account and numbers calls are placed from.
	// +required
	Twilio TwilioSpec `json:"twilio"`
	// relay is how the agent is told the answer.
	// +optional
	// +kubebuilder:default={}
	Relay RelaySpec `json:"relay,omitempty"`
	// sharding splits calls into shards, each with its own queue and workers.
	// +optional
	// +kubebuilder:default={}
	Sharding ShardingSpec `json:"sharding,omitempty"`
	// workers is how the worker Deployments run and scale.
	// +optional
	// +kubebuilder:default={}
	Workers WorkersSpec `json:"workers,omitempty"`
	// retention is how long a finished Delivery is kept before it is deleted,
	// and how long each of its calls stays in the call log after it ended
	// (with the recipient's answers, and their recordings at Twilio). Empty:
	// the Delivery is kept, and the call log keeps calls for the operator's
	// default (--call-log-retention).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="retention must not be negative"
	Retention *metav1.Duration `json:"retention,omitempty"`
	// recordingDeletion is when the recipient's recorded instructions and
	// their transcriptions are deleted at Twilio: WithCallLog when the call
	// expires from the call log (retention), AfterRelay as soon as the agent
	// was told (the transcription stays in the call log until it expires).
	// +optional
	// +kubebuilder:default=WithCallLog
	RecordingDeletion RecordingDeletion `json:"recordingDeletion,omitempty"`
	// suspend stops dialing: workers drain, queued calls are kept, and calling
	// resumes when suspend is cleared.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// ShardStatus is one shard's queue and workers.
type ShardStatus struct {
	// name of the shard.
	Name string `json:"name"`
	// dueNow is how many attempts are due and not yet picked up.
	// +optional
	DueNow int64 `json:"dueNow"`
	// scheduled is how many attempts are planned for later.
	// +optional
	Scheduled int64 `json:"scheduled"`
	// inFlight is how many attempts workers are handling now.
	// +optional
	InFlight int64 `json:"inFlight"`
	// oldestPendingAge is how long the oldest in-flight attempt has been held.
	// +optional
	OldestPendingAge *metav1.Duration `json:"oldestPendingAge,omitempty"`
	// replicas the shard's Deployment asks for.
	// +optional
	Replicas int32 `json:"replicas"`
	// readyReplicas of the shard's Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// lastScale is the operator's last change of the shard's replicas.
	// +optional
	LastScale *ScaleRecord `json:"lastScale,omitempty"`
}

// ScaleRecord is one scale decision of a shard: when, from and to how many
// pods, and why.
type ScaleRecord struct {
	// time of the decision.
	Time metav1.Time `json:"time"`
	// from is the replicas before.
	From int32 `json:"from"`
	// to is the replicas after.
	To int32 `json:"to"`
	// reason is a CamelCase word: Load, RateCeiling, Minimum, Maximum, Idle,
	// OffHours, CallsInProgress, ScaleDownStep, Wake.
	Reason string `json:"reason"`
	// message states the inputs: due now, in flight, due soon, calls per
	// pod, the rate ceiling.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Message string `json:"message,omitempty"`
}

// PhaseTotals counts the campaign's Deliveries by phase.
type PhaseTotals struct {
	Pending              int32 `json:"pending,omitempty"`
	Scheduled            int32 `json:"scheduled,omitempty"`
	Calling              int32 `json:"calling,omitempty"`
	Confirmed            int32 `json:"confirmed,omitempty"`
	RescheduleRequested  int32 `json:"rescheduleRequested,omitempty"`
	InstructionsRecorded int32 `json:"instructionsRecorded,omitempty"`
	Unreachable          int32 `json:"unreachable,omitempty"`
	OptedOut             int32 `json:"optedOut,omitempty"`
	Cancelled            int32 `json:"cancelled,omitempty"`
	Failed               int32 `json:"failed,omitempty"`
}

// CallCampaignStatus is what the operator observed of the campaign.
type CallCampaignStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// shardCount is the number of shards.
	// +optional
	ShardCount int32 `json:"shardCount,omitempty"`
	// shards is each shard's queue and workers.
	// +optional
	// +listType=map
	// +listMapKey=name
	Shards []ShardStatus `json:"shards,omitempty"`
	// replicas is the worker pods asked for, over all shards.
	// +optional
	Replicas int32 `json:"replicas"`
	// readyReplicas is the worker pods ready, over all shards.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// queued is the attempts due now or in flight, over all shards.
	// +optional
	Queued int64 `json:"queued"`
	// totals counts the campaign's Deliveries by phase.
	// +optional
	Totals PhaseTotals `json:"totals,omitempty"`
	// callsPerSecond is the recent rate of placed calls, as a decimal string.
	// +optional
	CallsPerSecond string `json:"callsPerSecond,omitempty"`
	// conditions: Ready, Progressing, Degraded and RateLimited, with reasons.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// The condition types of CallCampaign and Delivery.
const (
	// ConditionReady: the campaign's workers are up and can call / the delivery's calls are planned.
	ConditionReady = "Ready"
	// ConditionProgressing: the campaign's Deployments are rolling out or scaling.
	ConditionProgressing = "Progressing"
	// ConditionDegraded: something the operator cannot fix stops calling (see the reason).
	ConditionDegraded = "Degraded"
	// ConditionRateLimited: calls wait on the account's calls-per-second limit.
	ConditionRateLimited = "RateLimited"
)

// CallCampaign says how, when and from which number deliveries are called,
// and how the worker fleet scales.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cc,categories=delauto
// +kubebuilder:printcolumn:name="Shards",type=integer,JSONPath=`.status.shardCount`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready Replicas",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Queued",type=integer,JSONPath=`.status.queued`
// +kubebuilder:printcolumn:name="Confirmed",type=integer,JSONPath=`.status.totals.confirmed`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.sharding) || !has(self.spec.sharding) || self.spec.sharding.by == oldSelf.spec.sharding.by",message="spec.sharding.by cannot change: queued calls would be stranded in the old shards; create a new campaign instead"
type CallCampaign struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is how the campaign calls.
	// +required
	Spec CallCampaignSpec `json:"spec"`
	// status is what the operator observed.
	// +optional
	Status CallCampaignStatus `json:"status,omitempty"`
}

// CallCampaignList is a list of CallCampaigns.
// +kubebuilder:object:root=true
type CallCampaignList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CallCampaign `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CallCampaign{}, &CallCampaignList{})
}
