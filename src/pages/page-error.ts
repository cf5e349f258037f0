// An error shown to a person as a page: a status, a short title and a plain explanation (never a stack trace).
export class PageError extends Error {
  readonly status: number;
  readonly title: string;
  readonly link?: { href: string; label: string };

  constructor(status: number, title: string, message: string, link?: { href: string; label: string }) {
    super(message);
    this.status = status;
    this.title = title;
    this.link = link;
  }
}

export const expiredRequest = () =>
  new PageError(
    404,
    "Request not found",
    "This request has expired, was already answered, or was opened in another browser. Go back to the agent and start again.",
  );

export const badForm = () =>
  new PageError(
    403,
    "Form expired",
    "This form has expired or was not sent from this Deputy page. Go back, reload the page and try again.",
  );

export const alreadyAnswered = () =>
  new PageError(409, "Already answered", "This request has already been answered.");

/** The database could not be reached: this could not be completed, and trying again shortly may work. */
export const unavailable = () =>
  new PageError(
    503,
    "Temporarily unavailable",
    "Deputy cannot reach its database right now, so this could not be completed. Please try again in a moment.",
  );
