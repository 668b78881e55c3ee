// The subscription-trial example: activate a trial, then wait for a payment event for up to 14
// days; without one, downgrade the account. A day later, send the follow-up email (a welcome
// for payers, a win-back offer for the others). sdk/test/trial.test.ts tests both ways with the
// test kit, in real days.
import { event, task, workflow } from "../index.js";
import { days } from "./clock.js";

export const progress = (line: string) => console.log(`  ${new Date().toISOString().slice(11, 23)}  ${line}`);

const activateTrial = task({
  name: "activate-trial",
  async handler(input: { userId: string }) {
    progress(`trial activated for ${input.userId}`);
    return { plan: "trial" };
  },
});

const upgrade = task({
  name: "upgrade-plan",
  async handler(input: { userId: string; plan: string }) {
    progress(`${input.userId} paid: upgraded to ${input.plan}`);
    return { plan: input.plan };
  },
});

const downgrade = task({
  name: "downgrade-plan",
  async handler(input: { userId: string }) {
    progress(`${input.userId} did not pay within 14 days: downgraded to free`);
    return { plan: "free" };
  },
});

const sendEmail = task({
  name: "send-email",
  async handler(input: { userId: string; template: "welcome" | "win-back" }) {
    progress(`${input.userId}: ${input.template} email sent`);
    return { sent: input.template };
  },
});

export const subscriptionV1 = workflow({ name: "subscription-trial" }).v("1.0.0", {
  events: { paid: event<{ plan: string }>() },
  async handler(run, input: { userId: string }) {
    await activateTrial.start(run, input);
    const payment = await run.events.paid.wait({ timeout: days(14) });
    const { plan } = payment.timeout
      ? await downgrade.start(run, input)
      : await upgrade.start(run, { userId: input.userId, plan: payment.data.plan });
    await run.sleep("follow-up-delay", days(1));
    await sendEmail.start(run, { userId: input.userId, template: plan === "free" ? "win-back" : "welcome" });
    return { plan };
  },
});
