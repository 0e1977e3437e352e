// GraphiQL on this daemon's /graphql: queries over fetch with the session
// cookie (same origin), subscriptions over graphql-transport-ws.
'use strict';
(function () {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const fetcher = GraphiQL.createFetcher({
    url: '/graphql',
    subscriptionUrl: scheme + '://' + location.host + '/graphql',
  });
  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultEditorToolsVisibility: true,
    defaultQuery: '# hangar\'s GraphQL API: the schema is in the Docs pane.\n{\n  status { version pid lastEventId }\n  processes { name state health restarts }\n}\n',
  }));
})();
